"""Training jobs and CLI for camtrap-ml-backend."""
