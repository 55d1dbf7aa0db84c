"""One lockgate installation, as the server holds it: data directory, store, key pepper, signing key.

Only the server opens an installation (``lockgate serve``, and ``lockgate migrate`` which creates one).
Clients (the CLI, CI jobs, the console) never do: they hold a control token and talk to the REST API.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from sqlalchemy import Engine, make_url

from lockgate.config.loader import LoadedConfig, load_file, load_text
from lockgate.security.audit_verify import anchor_path, install_anchor_hook
from lockgate.security.pepper import load_pepper
from lockgate.security.signing import Signer, load_signer
from lockgate.store.database import data_dir, database_url, migrate, open_engine, require_current_schema


@dataclass(frozen=True, slots=True)
class Instance:
    data: Path
    url: str
    engine: Engine
    pepper: bytes
    signer: Signer

    @property
    def anchor(self) -> Path:
        return anchor_path(self.data)

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def open_instance(data: str | Path | None = None, *, check_schema: bool = True) -> Instance:
    """Open an existing installation; refuse a store whose schema this code does not know, and a data
    directory without its secrets (``lockgate migrate`` creates both)."""
    directory = data_dir(data)
    url = database_url(directory)
    engine = open_engine(url)
    if check_schema:
        require_current_schema(engine)
    return _instance(directory, url, engine, create=False)


def migrate_instance(data: str | Path | None = None) -> Instance:
    """Create or upgrade an installation: its secrets on first install, then the schema."""
    directory = data_dir(data)
    url = database_url(directory)
    engine = open_engine(url)
    instance = _instance(directory, url, engine, create=True)
    migrate(engine)
    return instance


def _instance(directory: Path, url: str, engine: Engine, *, create: bool) -> Instance:
    pepper = load_pepper(directory, create=create)
    signer = load_signer(directory, create=create)
    # After every commit that signs a new audit head, copy it to a file outside the database.
    install_anchor_hook(engine, anchor_path(directory))
    return Instance(directory, url, engine, pepper, signer)


def load_config(path: str | Path | None) -> LoadedConfig:
    if path is None:
        text = files("lockgate.defaults").joinpath("lockgate.yaml").read_text(encoding="utf-8")
        return load_text(text, source="<embedded defaults>")
    return load_file(path)
