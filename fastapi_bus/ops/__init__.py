"""Running handlers outside the web server: workers, their supervisor and health checks."""
