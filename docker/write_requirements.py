"""Write ``docker/requirements.txt`` and ``docker/requirements-test.txt`` from the pins in ``setup.cfg``.

Run after changing a pin: ``python docker/write_requirements.py``; ``tests/test_containers.py`` fails while
the image's requirements and ``setup.cfg`` differ.
"""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADERS = {
    "requirements.txt": "# Pinned runtime requirements of the image: setup.cfg install_requires "
    "(written by docker/write_requirements.py).",
    "requirements-test.txt": "# Pinned requirements of the image's test target: setup.cfg "
    "extras_require[test] (written by docker/write_requirements.py).",
}


def setup_cfg_pins(section: str, key: str) -> list[str]:
    """The requirement lines of ``setup.cfg`` ``[section] key``, in file order."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return [line.strip() for line in config[section][key].splitlines() if line.strip()]


def main() -> None:
    pins = {
        "requirements.txt": setup_cfg_pins("options", "install_requires"),
        "requirements-test.txt": setup_cfg_pins("options.extras_require", "test"),
    }
    for name, lines in pins.items():
        (REPO / "docker" / name).write_text(HEADERS[name] + "\n" + "\n".join(lines) + "\n")
        print(f"docker/{name}: {len(lines)} pins")


if __name__ == "__main__":
    main()
