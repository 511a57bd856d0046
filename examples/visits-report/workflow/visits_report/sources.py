"""Stand-ins for two real sources, deterministic so tests can check them."""

WEB = [{"page": "/", "visits": 120}, {"page": "/pricing", "visits": 40}]
MOBILE = [{"page": "/", "visits": 80}, {"page": "/docs", "visits": 15}]


def fetch(source: str) -> list[dict]:
    return {"web": WEB, "mobile": MOBILE}[source]
