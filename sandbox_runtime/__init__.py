"""What runs inside each sandbox interpreter: import one package, serve its tasks."""
