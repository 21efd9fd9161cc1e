"""Notebook support: parameter checking and the papermill runner."""
