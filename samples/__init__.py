"""Built-in sample data and tiny models for the demo and the tests (real file formats, random weights)."""
