"""Shared fixtures: real MNIST (fetched once into the cache by `make test`), small study files."""

import textwrap

import pytest


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST as uint8 arrays; `make test` fetches it first (offline source where no mirror answers)."""
    from mnistlab.data import load_arrays
    return load_arrays("mnist")


@pytest.fixture
def write_study(tmp_path):
    """write_study(text) -> path of a study file in a fresh directory (its store goes beside it)."""
    def write(text: str, name: str = "study.toml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


MLP = ["Dense(64, activation='relu')", "Dense(10, activation='softmax')"]


def tiny_study(name="tiny", models=None, epochs=2, train_size=2000, test_size=500, extra="", optimizer="adam",
               seed=7):
    """A study text of small MLPs on MNIST slices: trains in about a second per run."""
    models = models or {"a": MLP}
    blocks = "".join(f'\n[[model]]\nname = "{m}"\nlayers = {layers!r}\n'.replace("\"Dense", "\"Dense")
                      for m, layers in models.items())
    return (f'name = "{name}"\nseed = {seed}\n{extra}\n[train]\nepochs = {epochs}\nbatch_size = 64\n'
            f'optimizer = "{optimizer}"\ntrain_size = {train_size}\ntest_size = {test_size}\n{blocks}')


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server URL: $MNISTLAB_TEST_POSTGRES, else a throwaway cluster from Debian's
    binaries (tests/pg_cluster.py), stopped at the end of the session; the tests skip without either."""
    import os

    from pg_cluster import Cluster, find_binaries
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
    if os.environ.get("MNISTLAB_TEST_POSTGRES"):
        yield os.environ["MNISTLAB_TEST_POSTGRES"]
        return
    if find_binaries() is None:
        pytest.skip("no PostgreSQL: install Debian's postgresql (make test does, as root with apt) "
                    "or set MNISTLAB_TEST_POSTGRES=postgresql+psycopg://user@host/db")
    with Cluster.start() as url:
        yield url


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the test server for one test (dropped afterwards)."""
    import uuid

    import sqlalchemy as sa
    name = f"mnistlab_test_{uuid.uuid4().hex[:12]}"
    server = sa.engine.make_url(postgres_server)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
