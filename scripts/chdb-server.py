#!/usr/bin/env python3
"""The real ClickHouse engine (chDB, from PyPI) behind the part of ClickHouse's HTTP interface
that archtrace's tests use, because a modern ClickHouse server cannot be installed here.

Emulated: POST and GET on any path; the SQL in the `query` parameter, in the body, or both (an
INSERT's data follows in the body, as ClickHouse's HTTP interface takes it); the `database` and
`default_format` parameters; a body sent with `Transfer-Encoding: chunked`; errors answered with
status 500, ClickHouse's text and the `X-ClickHouse-Exception-Code` header; `GET /ping`.
Not emulated: compression (clients must send and accept plain bodies), sessions, query parameters
(`param_*`), settings passed as URL parameters (ignored), authentication (any user is accepted),
progress headers and streaming (an answer is sent whole), and concurrency (one query at a time).

Usage: chdb-server.py --data DIR [--port N]. Prints `listening on 127.0.0.1:PORT` when ready.
"""

import argparse
import http.server
import os
import re
import sys
import tempfile
import threading
import urllib.parse

from chdb import session

INSERT_DATA = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+(FORMAT\s+\w+)\s*$", re.I | re.S)
ERROR_CODE = re.compile(r"Code: (\d+)\.")


class Engine:
    def __init__(self, data_dir):
        self.session = session.Session(data_dir)
        self.lock = threading.Lock()
        self.scratch = tempfile.mkdtemp(prefix="chdb-insert-")

    def run(self, sql, database, output_format, data):
        with self.lock:
            if database:
                self.session.query(f"USE `{database}`")
            insert = INSERT_DATA.match(sql) if data else None
            if insert:
                # chDB takes no data stream beside the SQL: the body goes through a file.
                path = os.path.join(self.scratch, "body")
                with open(path, "wb") as file:
                    file.write(data)
                sql = f"{insert.group(1)} FROM INFILE '{path}' {insert.group(2)}"
            elif data:
                sql = f"{sql}\n{data.decode()}"
            result = self.session.query(sql, output_format)
            return result.bytes() if result is not None else b""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine = None

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a test kills a worker mid-request)

    def handle_query(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ping":
            return self.answer(200, b"Ok.\n")
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        body = self.read_body()
        sql = params.get("query")
        data = body
        if sql is None:
            sql, data = body.decode(), b""
        if not sql.strip():
            return self.answer(400, b"Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)\n",
                               [("X-ClickHouse-Exception-Code", "62")])
        try:
            out = self.engine.run(sql, params.get("database"),
                                  params.get("default_format", "TabSeparated"), data)
        except Exception as error:  # the engine's errors carry ClickHouse's own text and code
            text = str(error)
            code = ERROR_CODE.search(text)
            return self.answer(500, (text + "\n").encode(),
                               [("X-ClickHouse-Exception-Code", code.group(1) if code else "1001")])
        self.answer(200, out)

    do_GET = handle_query
    do_POST = handle_query


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder for the engine's databases")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args()
    Handler.engine = Engine(args.data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
