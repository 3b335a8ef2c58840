import streamlit as st

st.title("Inspect")
