"""The terminado peer of the terminal benchmark: a minimal tornado app that
serves one new terminal per WebSocket at ws://127.0.0.1:PORT/websocket,
running COMMAND... (terminado's own protocol: ["stdin", …] in,
["stdout", …] out, ["disconnect", 1] when the command ends).

    python3 app.py PORT COMMAND...
"""

import sys

import tornado.ioloop
import tornado.web
from terminado import TermSocket, UniqueTermManager


def main() -> None:
    port = int(sys.argv[1])
    command = sys.argv[2:]
    manager = UniqueTermManager(shell_command=command)
    app = tornado.web.Application(
        [(r"/websocket", TermSocket, {"term_manager": manager})],
        websocket_max_message_size=64 * 1024 * 1024,
    )
    app.listen(port, "127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
