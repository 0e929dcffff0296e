"""Two worker processes run trials of one Optuna study on a real PostgreSQL server.

The test starts a throwaway cluster (initdb + pg_ctl in a temporary folder, as the `postgres`
user when run as root); .ci/postgres.sh installs the binaries and psycopg2. It skips only where
the PostgreSQL binaries are absent.
"""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

HERE = Path(__file__).parent
REPO = HERE.parents[2]


def _pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: run .ci/postgres.sh "
                    "(apt-get install postgresql) to run this test")
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install psycopg2-binary (.ci/postgres.sh)")
    root = os.geteuid() == 0
    base = tempfile.mkdtemp(prefix="masec-pg-")
    data = os.path.join(base, "data")
    if root:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chmod(base, 0o755)
        wrap = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None
        if wrap is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    else:
        wrap = []
    port = _free_port()

    def run(cmd):
        return subprocess.run(wrap + cmd, check=True, capture_output=True, text=True, cwd=base)

    run([initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(base, "log"), "-w", "-t", "60", "start"])
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE optuna")
        con.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(wrap + [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_one_study(postgres_url, tmp_path):
    import optuna

    t0 = time.time()
    cmd = [sys.executable, "-m", "masec.passes.search.cli", str(HERE / "toy_model.py"), "--storage", postgres_url,
           "--study", "shared", "--trials", "4", "--types", "mxint8,mxint4,mxfp4", "--block-sizes", "32,64",
           "--no-progress", "--ilp-points", "3", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + sys.path))
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"w{i}"), "--seed", str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    by_worker = {}
    for t in done:
        if t.user_attrs.get("source") == "optuna":
            by_worker.setdefault(t.user_attrs["worker"], []).append(t.number)
    assert len(by_worker) == 2, by_worker          # both workers contributed trials
    assert all(len(v) == 4 for v in by_worker.values()), by_worker
    # each worker's search.json sees the shared study (its own and the other worker's trials)
    import json

    # Points are one per distinct assignment (two trials may propose the same one), each listing the
    # study trials that evaluated it. A worker sees at least its own trials; the worker that read the
    # study last (after the other had finished) sees every trial of both.
    own = {w: set(v) for w, v in by_worker.items()}
    seen = []
    for i in range(2):
        doc = json.loads((tmp_path / f"w{i}" / "search.json").read_text())
        assert doc["study"]["name"] == "shared" and doc["study"]["storage"].startswith("postgresql")
        trials = {n for p in doc["points"] for n in p.get("trials", [])}
        assert any(v <= trials for v in own.values()), (trials, own)
        seen.append(trials)
    assert max(seen, key=len) >= set().union(*own.values()), (seen, own)
    print(f"two workers on PostgreSQL: {len(done)} trials in {time.time() - t0:.1f} s")
