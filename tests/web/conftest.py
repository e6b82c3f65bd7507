"""Web tests: the FastAPI app on a real uvicorn (`live_server`, from tests/fixtures_web.py), spoken to
over HTTP with httpx, on both databases."""
