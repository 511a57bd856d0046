"""Stand-ins for a real source and warehouse, deterministic so tests can check them."""

SAMPLE = [
    {"name": " Ada ", "visits": 3},
    {"name": "grace", "visits": None},
    {"name": "Linus", "visits": 7},
]


def fetch_from(source):
    return [dict(row, source=source) for row in SAMPLE]


def clean(rows):
    return [
        {"name": row["name"].strip().title(), "visits": row["visits"]}
        for row in rows
        if row["visits"] is not None
    ]


def write_to(destination, rows):
    return {"destination": destination, "rows": len(rows)}
