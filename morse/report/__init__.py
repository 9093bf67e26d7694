"""Reports: training curves, overlay figures, the renderer's right and wrong flips
(:mod:`morse.report.flips`) and the one-file HTML/Markdown page."""
