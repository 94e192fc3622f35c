"""Start the dashboard: ``streamlit run app.py`` with the engine's heavy imports already
under way.

Streamlit runs ``app.py`` only when the first browser connects, so on a fresh server the
first visitor used to wait for torch, torchvision (which pulls in ``torch._dynamo``),
plotly and the engine to import: about 2.5 s of the first page's 4 s on this 2-core
machine (docs/autopilot.md). Here a background thread imports them while the server
starts; the script then finds them in ``sys.modules``. Nothing else changes: every
argument is passed to ``streamlit run``.

    .venv/bin/python serve.py [--server.port 8501 ...]
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENGINE_MODULES = ("torch", "torchvision", "pandas", "plotly.graph_objects", "compress.zoo", "compress.measure",
                  "compress.prune", "compress.pipeline", "compress.charts")


def _import_engine() -> None:
    """What the first page imports, in the order it needs it. Errors are left for the page
    to report (it imports the same modules and shows a message)."""
    import importlib
    for name in ENGINE_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the page's own import reports it
            return


def main() -> None:
    sys.path.insert(0, str(ROOT))
    threading.Thread(target=_import_engine, name="import-engine", daemon=True).start()
    from streamlit.web import cli
    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
