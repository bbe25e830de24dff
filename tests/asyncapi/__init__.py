"""Tools for the AsyncAPI tests: the official parser (npm) and a headless Chromium."""
