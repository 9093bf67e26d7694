"""Reports: training curves, overlay figures and the one-file HTML/Markdown page."""
