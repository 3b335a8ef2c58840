"""Long work outside the Streamlit script run: training jobs in their own worker process (queued, cancellable,
with live progress, safe against kill -9), and the comparisons and re-inspections that decide what to promote."""
