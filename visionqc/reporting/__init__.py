"""Reporting: colours, Altair charts, the Dashboard in charts and words, the model card as tables, exports."""
