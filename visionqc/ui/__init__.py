"""The user interface: everything that imports Streamlit. Pages call into these modules; nothing here runs SQL
or touches tensors itself (that is the store and the model)."""
