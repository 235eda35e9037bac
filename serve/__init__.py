"""`python3 cli.py serve`: a local web page to try a checkpoint (Gradio).

- `service` — the requests the page makes, through `trainer.generate.run_requests` (the code `generate` runs).
- `app` — the page: Text → faces, Face → caption, Face → attributes; one model call at a time.
"""

DEFAULT_HOST = "127.0.0.1"  # only this machine; --host 0.0.0.0 opens it to the network
DEFAULT_PORT = 7860  # Gradio's usual port
