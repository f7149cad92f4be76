"""A real SMTP server for the email tests: aiosmtpd on 127.0.0.1:PORT that
requires STARTTLS (with the given certificate) and then AUTH (PLAIN or
LOGIN) with one user and password. Every message received is appended to
OUT as one JSON line (envelope, headers, decoded body, how the session
was secured); every login (its mechanism, user, outcome) is appended to OUT.auth.

    python3 smtp_server.py PORT CERT KEY USER PASSWORD OUT
"""

import email
import email.policy
import json
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, user, password, out = sys.argv[1:7]
lock = threading.Lock()


def append(path, record):
    with lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else ""
    append(
        out + ".auth",
        {"ok": ok, "mechanism": mechanism, "login": login, "tls": session.ssl is not None},
    )
    return AuthResult(success=ok, handled=False)


class Record:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        append(
            out,
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "from": str(msg["From"]),
                "to": str(msg["To"]) if msg["To"] is not None else None,
                "bcc": str(msg["Bcc"]) if msg["Bcc"] is not None else None,
                "subject": str(msg["Subject"]),
                "message_id": str(msg["Message-ID"]),
                "content_type": msg.get_content_type(),
                "body": msg.get_content().replace("\r\n", "\n"),
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
            },
        )
        return "250 OK"


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
controller = Controller(
    Record(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=ctx,
    require_starttls=True,
    auth_required=True,
    auth_require_tls=True,
    authenticator=authenticator,
)
controller.start()
print(f"listening on 127.0.0.1:{port}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
controller.stop()
