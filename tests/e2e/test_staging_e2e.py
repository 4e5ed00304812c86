"""Must-show 2: a TES task stages http://, s3:// and inline inputs and an s3:// output
through a real node with a local gateway; a missing input is a SYSTEM_ERROR with a reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import s3fs
import tes

from httpserve import serve_dir
from nodeproc import Proc, admin_token, free_port, start_node
from s3 import require_s3

pytestmark = pytest.mark.slow
BUCKET = "e2e-staging"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tes.HTTPClient, str]]:
    s3_env = require_s3()
    base = tmp_path_factory.mktemp("staging")
    (base / "web").mkdir()
    (base / "web" / "words.txt").write_text("alpha\nbeta\n")
    fs = s3fs.S3FileSystem(
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=s3_env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    fs.mkdir(BUCKET)
    fs.pipe(f"{BUCKET}/numbers.txt", b"1\n2\n3\n")
    with pytest.MonkeyPatch.context() as mp, serve_dir(base / "web") as web:
        for k, v in s3_env.items():  # the node's local gateway (and its runners) inherit them
            mp.setenv(k, v)
        port = free_port()
        # The web server is on loopback, internal to the node: its operator opens it.
        proc: Proc = start_node(
            base / "data", port, "--cpus", "2", "--url-allow", "127.0.0.0/8", up=True
        )
        try:
            client = tes.HTTPClient(f"http://127.0.0.1:{port}", token=admin_token(proc), timeout=10)
            yield client, web
        finally:
            proc.stop()


def test_http_s3_and_content_inputs_to_an_s3_output(env: tuple[tes.HTTPClient, str]) -> None:
    client, web = env
    task = tes.Task(
        name="staging",
        inputs=[
            tes.Input(url=f"{web}/words.txt", path="/data/words.txt"),
            tes.Input(url=f"s3://{BUCKET}/numbers.txt", path="/data/numbers.txt"),
            tes.Input(content="inline\n", path="/data/inline.txt"),
        ],
        outputs=[tes.Output(url=f"s3://{BUCKET}/out/all.txt", path="/data/all.txt")],
        executors=[
            tes.Executor(
                image="alpine",
                command=["sh", "-c", "cat words.txt numbers.txt inline.txt > all.txt"],
                workdir="/data",
            )
        ],
    )
    tid = client.create_task(task)
    client.wait(tid, timeout=60)
    got = client.get_task(tid, view="FULL")
    assert got.state == "COMPLETE", got.logs
    expected = b"alpha\nbeta\n1\n2\n3\ninline\n"
    log = got.logs[-1]
    assert len(log.outputs) == 1
    out = log.outputs[0]
    assert out.url == f"s3://{BUCKET}/out/all.txt"
    assert out.path == "/data/all.txt"
    assert int(out.size_bytes) == len(expected)
    sha = hashlib.sha256(expected).hexdigest()
    assert log.metadata["sha256:/data/all.txt"] == sha
    s3_env = require_s3()
    fs = s3fs.S3FileSystem(endpoint_url=s3_env["AWS_ENDPOINT_URL"], skip_instance_cache=True)
    assert hashlib.sha256(fs.cat(f"{BUCKET}/out/all.txt")).hexdigest() == sha


def test_missing_input_is_a_system_error(env: tuple[tes.HTTPClient, str]) -> None:
    client = env[0]
    task = tes.Task(
        inputs=[tes.Input(url=f"s3://{BUCKET}/absent.txt", path="/data/absent.txt")],
        executors=[tes.Executor(image="alpine", command=["true"])],
    )
    tid = client.create_task(task)
    client.wait(tid, timeout=60)
    got = client.get_task(tid, view="FULL")
    assert got.state == "SYSTEM_ERROR"
    lines = got.logs[-1].system_logs
    assert any(f"s3://{BUCKET}/absent.txt: not found" in line for line in lines), lines
