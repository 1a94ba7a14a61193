"""The gateway against hostile clients, over HTTPS with a certificate made here: the cases that used to
get 5xx, a fuzz over every route's bodies, headers and paths, WHIP from a browser on another origin (CORS).

One Ray instance and one service (HTTPS, one allowed browser origin) for the module, with a live synthetic
stream that must keep working through all of it.
"""
import asyncio
import datetime
import gzip
import ipaddress
import json
import logging
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from functools import partial

import aiohttp
import msgpack
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiortc import RTCConfiguration, RTCPeerConnection
from whip_publisher import Publisher, SynthTrack, loopback_ice  # noqa: F401  (a fixture)

import conftest
from actors import page
from actors.client import Client, ClientError
from actors.server import Service
from configs import load_config
from conftest import need
from test_sources_rtsp import free_port

pytestmark = pytest.mark.timeout(300)
wait_for = partial(conftest.wait_for, deadline=90.0)

TOKEN = "s3cret-token"
LIVE = "live"  # the stream that must survive everything
SYNTH = "synth://?seed=3&fps=4&speed=2"


def self_signed(dir_) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (as a subject alternative name, which TLS clients check) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dir_ / "cert.pem", dir_ / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def page_port():
    return free_port()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    return cert, key, ssl.create_default_context(cafile=cert)


@pytest.fixture(scope="module")
def service(tmp_path_factory, tls, page_port):
    cfg = load_config(overrides={
        "runtime": {"snapshot_dir": str(tmp_path_factory.mktemp("snapshots")), "request_timeout": 60.0,
                    "health_interval": 0.5},
        "server": {"port": 0, "tls_cert": tls[0], "tls_key": tls[1], "body_timeout": 2.0,
                   "cors_origins": [f"http://127.0.0.1:{page_port}"]},
    })
    with Service(cfg, num_cpus=2, token=TOKEN) as svc:
        client = Client(svc.url, TOKEN, ssl_context=tls[2])
        client.add(LIVE, SYNTH)
        wait_for(lambda: len(client.timeline(LIVE)) >= 2, "two cubes of the live stream")
        yield svc


@pytest.fixture(scope="module")
def client(service, tls):
    return Client(service.url, TOKEN, ssl_context=tls[2])


def raw(service, ctx, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send these exact bytes over TLS; the status of the answer (0: the server closed without one)."""
    host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as s:
            s.sendall(request)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    if not answer.startswith(b"HTTP/1.1 "):
        return 0, answer
    return int(answer[9:12]), answer


def http(method: str, path: bytes, headers: dict[bytes, bytes], body: bytes = b"", length: int | None = None) -> bytes:
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: " + str(len(body) if length is None else length).encode()]
    lines += [k + b": " + v for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def auth(token: str = TOKEN) -> dict[bytes, bytes]:
    return {b"Authorization": b"Bearer " + token.encode()}


def assert_live_stream_works(client) -> None:
    sent = client.stream(LIVE)["source"]["frames_sent"]
    wait_for(lambda: client.stream(LIVE)["source"]["frames_sent"] > sent + 2, "more frames of the live stream")
    assert client.ask(LIVE, "what is in view ?")["citations"]
    assert client.health() == {"ok": True}


def assert_no_tracebacks(caplog) -> None:
    noisy = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy[:5]]


JSON = {b"Content-Type": b"application/json"}
MSGPACK = {b"Content-Type": b"application/msgpack"}


def test_requests_that_used_to_get_5xx(service, client, tls, caplog):
    caplog.set_level(logging.INFO)
    ask = f"/streams/{LIVE}/ask".encode()
    deep = b'{"question": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    cases = [  # (what, request bytes, expected status)
        ("non-UTF-8 Authorization", http("GET", b"/streams", {b"Authorization": b"Bearer \xff\xfe\x80"}), 401),
        ("non-UTF-8 Authorization, /health", http("GET", b"/health", {b"Authorization": b"\xc3\x28"}), 200),
        ("JSON 1000 deep", http("POST", ask, auth() | JSON, deep), 400),
        ("JSON 1000 deep, bare", http("POST", ask, auth() | JSON, b"[" * 1000 + b"]" * 1000), 400),
        ("NaN start", http("POST", ask, auth() | JSON, b'{"question": "why ?", "start": NaN}'), 400),
        ("Infinity end", http("POST", ask, auth() | JSON, b'{"question": "why ?", "end": Infinity}'), 400),
        ("1e999 end", http("POST", ask, auth() | JSON, b'{"question": "why ?", "end": 1e999}'), 400),
        ("msgpack NaN", http("POST", ask, auth() | MSGPACK, msgpack.packb({"question": "why ?", "start": float("nan")})), 400),
        ("lone surrogate question", http("POST", ask, auth() | JSON, b'{"question": "why \\ud800 ?"}'), 400),
        ("lone surrogate option", http("POST", ask, auth() | JSON, b'{"question": "why ?", "options": ["yes", "\\udfff"]}'), 400),
        ("NUL in a question", http("POST", ask, auth() | JSON, b'{"question": "why \\u0000 ?"}'), 400),
        ("gzip that is not", http("POST", ask, auth() | JSON | {b"Content-Encoding": b"gzip"}, b"not gzip at all"), 400),
        ("deflate that is not", http("POST", ask, auth() | JSON | {b"Content-Encoding": b"deflate"}, b"\x00\x01nope"), 400),
        ("unclosed IPv6 bracket", http("POST", b"/streams", auth() | JSON, b'{"id": "v6", "source": "rtsp://[::1/x"}'), 400),
        ("whip:// unclosed bracket", http("POST", b"/streams", auth() | JSON, b'{"id": "v6", "source": "whip://[x"}'), 400),
        ("non-UTF-8 path", http("GET", b"/streams/%ff%fe", auth()), 404),
        ("control character in a path", http("GET", b"/streams/a%01b/timeline", auth()), 404),
        ("a lone surrogate in a path", http("GET", b"/streams/%ED%A0%80", auth() | {b"Accept": b"application/msgpack"}), 404),
    ]
    for what, request, status in cases:
        got, answer = raw(service, tls[2], request)
        assert got == status, (what, answer[-300:])
    # a body that does decompress still works
    good = json.dumps({"question": "what moved ?"}).encode()
    for encoding, packed in ((b"gzip", gzip.compress(good)), (b"deflate", zlib.compress(good))):
        got, answer = raw(service, tls[2], http("POST", ask, auth() | JSON | {b"Content-Encoding": encoding}, packed))
        assert got == 200, answer[-300:]
    assert_no_tracebacks(caplog)


def test_a_body_shorter_than_its_content_length_times_out(service, tls):
    """The server answers 408 after server.body_timeout (2 s here) and closes the connection, instead of
    holding it; a route that never reads the body closes it as soon (aiohttp's lingering is cut to it)."""
    for method, path in (("POST", f"/streams/{LIVE}/ask"), ("GET", "/streams")):
        started = time.monotonic()
        status, _ = raw(service, tls[2], http(method, path.encode(), auth() | JSON, b'{"question": "wh', length=1000),
                        timeout=30)
        assert status == (408 if method == "POST" else 200) and time.monotonic() - started < 8, (method, status)


async def test_concurrent_add_and_remove_of_one_id(service, tls):
    """POST and DELETE of one id at once, many times: each answers 201/409 or 200/404, never 5xx, and
    the id ends either whole (a working stream) or absent."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async def post():
            async with s.post(f"{service.url}/streams", json={"id": "racy", "source": SYNTH}, ssl=tls[2]) as r:
                return r.status

        async def delete():
            async with s.delete(f"{service.url}/streams/racy", ssl=tls[2]) as r:
                return r.status

        statuses = []
        for _ in range(4):
            statuses += await asyncio.gather(post(), delete(), post(), delete())
        assert all(st_ in (200, 201, 404, 409) for st_ in statuses), statuses
        async with s.get(f"{service.url}/streams", ssl=tls[2]) as r:
            ids = [x["id"] for x in await r.json()]
        if "racy" in ids:
            async with s.get(f"{service.url}/streams/racy", ssl=tls[2]) as r:
                assert r.status == 200 and (await r.json())["source"]["state"] in ("connecting", "connected")
            async with s.delete(f"{service.url}/streams/racy", ssl=tls[2]) as r:
                assert r.status == 200


ROUTES = ["/health", "/", "/ui/app.js", "/whoami", "/metrics", "/streams", "/streams/{id}", "/streams/{id}/timeline",
          "/streams/{id}/thumbnails/{n}", "/streams/{id}/ask", "/whip/{id}", "/whip/{id}/{n}", "/watches",
          "/streams/{id}/watches", "/streams/{id}/watches/{n}", "/events?since={n}&stream={id}", "/search?q={id}&limit={n}",
          "/v1/chat/completions", "/v1/models"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"id": st.just(LIVE) | st.integers() | st.text(max_size=10).map(lambda s: "/" + s),
                                        "source": st.sampled_from(["rtsp://[::1/x", "rtsp://", "synth://?seed=x", "whip://",
                                                                   "gopher://x", "rtsp://h:99999/x"]) | st.text(max_size=30),
                                        "question": st.text(max_size=40) | json_values,
                                        "start": json_values, "end": json_values, "options": json_values,
                                        "extra": json_values}),
    st.fixed_dictionaries({"model": st.just(f"cubestream/{LIVE}") | st.text(max_size=10)}, optional={  # chat
        "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"]),
                                                    "content": st.text(max_size=30) | json_values}), max_size=3) | json_values,
        "stream": json_values, "max_tokens": json_values}),
    json_values)


@st.composite
def requests(draw):
    """(method, path, headers, body, whether it carries the valid token)."""
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]))
    ident = draw(st.just(LIVE) | st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass").hex()[:24])
                 | st.binary(max_size=12).map(lambda b: "".join(f"%{c:02x}" for c in b)) | st.text(max_size=12))
    path = draw(st.sampled_from(ROUTES)).replace("{id}", ident).replace("{n}", str(draw(st.integers(-5, 10**20))))
    path = path.encode("utf-8", "surrogatepass") + draw(st.just(b"") | st.binary(max_size=10))  # raw bytes too
    valid = draw(st.booleans())
    headers = {}
    if valid:
        headers |= auth()
    elif draw(st.booleans()):
        headers[b"Authorization"] = draw(st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b))
    headers[b"Content-Type"] = draw(st.sampled_from([b"application/json", b"application/msgpack", b"application/sdp",
                                                     b"text/plain", b"\xff/\xfe"]))
    if draw(st.booleans()):
        headers[b"Content-Encoding"] = draw(st.sampled_from([b"gzip", b"deflate", b"br", b"identity", b"x\xff"]))
    if draw(st.booleans()):
        headers[b"Origin"] = draw(st.sampled_from([b"http://evil.example", b"null", b"\xff"]))
        headers[b"Access-Control-Request-Method"] = b"POST"
    value = draw(bodies)
    kind = draw(st.sampled_from(["json", "msgpack", "binary"]))
    if kind == "json":
        body = json.dumps(value, allow_nan=True, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif kind == "msgpack":
        try:
            body = msgpack.packb(value, unicode_errors="surrogatepass")
        except (ValueError, TypeError, OverflowError):
            body = b"\xc1"
    else:
        body = draw(st.binary(max_size=200))
    if method == "DELETE" and ident == LIVE:  # the one stream that must survive
        method = "GET"
    return method, path, headers, body, valid


def test_fuzz_every_route(service, client, tls, caplog):
    """No 5xx, no 2xx without the token (but for /health, the page's static files and CORS preflights,
    which carry none by design),
    no traceback in the log; then the service and the live stream still work."""
    caplog.set_level(logging.INFO)
    seen = []

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests())
    def one(request):
        method, path, headers, body, valid = request
        status, answer = raw(service, tls[2], http(method, path, headers, body))
        seen.append(status)
        assert status < 500, (method, path, headers, body[:100], answer[-300:])
        public = path.decode("latin-1") in {"/health", *page.PUBLIC_PATHS} or (method == "OPTIONS" and status == 204)
        if not valid and 200 <= status < 300:
            assert public, (method, path, headers, answer[-300:])

    one()
    assert len(set(seen)) >= 4, f"the fuzz reached too few outcomes: {sorted(set(seen))}"
    assert_no_tracebacks(caplog)
    assert [x["id"] for x in client.streams()] == [LIVE]
    assert_live_stream_works(client)


async def test_whip_offers_that_aiortc_would_fail_on_later(service, tls):
    """Refused before the 201: without a DTLS fingerprint, with NUL bytes, truncated."""
    await asyncio.to_thread(Client(service.url, TOKEN, ssl_context=tls[2]).add, "offers", "whip://offers")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(SynthTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    good = pc.localDescription.sdp
    no_fingerprint = "".join(line for line in good.splitlines(keepends=True) if not line.startswith("a=fingerprint"))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
    try:
        async with aiohttp.ClientSession(headers=headers) as s:
            for offer in (no_fingerprint, good.replace("a=ice-ufrag", "a=ice-\x00ufrag"), good[:len(good) // 2]):
                async with s.post(f"{service.url}/whip/offers", data=offer.encode(), ssl=tls[2]) as r:
                    assert r.status == 400, await r.text()
    finally:
        await pc.close()
        await asyncio.to_thread(Client(service.url, TOKEN, ssl_context=tls[2]).remove, "offers")


async def test_https_api_and_whip(service, client, tls, loopback_ice):
    """The API and WHIP answer over HTTPS only; an aiortc publisher's frames reach the stream."""
    assert service.url.startswith("https://")
    with pytest.raises(ClientError):  # a client that does not trust the certificate
        await asyncio.to_thread(Client(service.url, TOKEN).health)
    plain = service.url.replace("https://", "http://")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"{plain}/health") as r:
                await r.read()
    await asyncio.to_thread(client.add, "tlsweb", "whip://tlsweb")
    pub = await Publisher(f"{service.url}/whip/tlsweb", token=TOKEN, ssl=tls[2]).start()
    try:
        await asyncio.wait_for(_until(lambda: client.stream("tlsweb")["source"]["frames_sent"] >= 3), 60)
        assert await pub.stop() == 200
    finally:
        await pub.pc.close()
        await asyncio.to_thread(client.remove, "tlsweb")


async def _until(cond) -> None:
    while not await asyncio.to_thread(cond):
        await asyncio.sleep(0.2)


PAGE = """<!doctype html><script>
(async () => {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(media.getVideoTracks()[0], {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {  // no trickle ICE: send the offer with every candidate in it
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  // another origin, and an Authorization header: the browser sends a CORS preflight first
  const r = await fetch("%(whip)s", {method: "POST", body: pc.localDescription.sdp,
                                     headers: {"Content-Type": "application/sdp", "Authorization": "Bearer %(token)s"}});
  const location = r.headers.get("Location");  // readable only if the server exposes it
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
  await fetch("/report?status=" + r.status + "&location=" + encodeURIComponent(location || ""));
})();
</script>"""


async def test_chromium_publishes_over_whip_from_another_origin(service, client, tls, page_port, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "Debian's chromium is not installed")
    # a preflight from an origin not in server.cors_origins is refused, and gets no CORS headers
    async with aiohttp.ClientSession() as s:
        async with s.options(f"{service.url}/whip/browser", ssl=tls[2], headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    await asyncio.to_thread(client.add, "browser", "whip://browser")
    reports: asyncio.Queue = asyncio.Queue()
    page = web.Application()

    async def index(_):
        return web.Response(text=PAGE % {"whip": f"{service.url}/whip/browser", "token": TOKEN}, content_type="text/html")

    async def report(request):
        reports.put_nowait(dict(request.query))
        return web.Response(text="ok")

    page.router.add_get("/", index)
    page.router.add_get("/report", report)
    runner = web.AppRunner(page)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", page_port).start()
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection", "--disable-gpu",
         "--ignore-certificate-errors", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", f"--user-data-dir={tmp_path}", f"http://127.0.0.1:{page_port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        got = await asyncio.wait_for(reports.get(), 60)
        assert got["status"] == "201" and got["location"].startswith("/whip/browser/"), got
        await asyncio.wait_for(_until(lambda: client.stream("browser")["source"]["frames_sent"] >= 3), 60)
    finally:
        browser.kill()
        browser.wait()
        await runner.cleanup()
        await asyncio.to_thread(client.remove, "browser")
