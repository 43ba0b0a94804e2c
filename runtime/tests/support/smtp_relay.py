#!/usr/bin/env python3
"""A loopback SMTP relay for PiCloud's mail tests (aiosmtpd).

Usage: smtp_relay.py DIR MODE
  MODE: ok        every message gets 250
        451-once  the first message gets 451, later ones 250
        550       every message gets 550
        hang-first the first message is written as received-1.eml and never
                  answered (the sender's leader is killed meanwhile); later
                  ones get 250

Every message that reaches DATA is written to DIR: accepted ones as
accepted-N.eml, refused ones as refused-N.eml (so a test can compare the
Message-ID of a refused attempt with the retry's). The port the relay
listens on (127.0.0.1, chosen by the OS) is written to DIR/port once it
listens.
"""

import asyncio
import os
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, directory, mode):
        self.directory = directory
        self.mode = mode
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        if self.mode == "hang-first" and self.count == 1:
            path = os.path.join(self.directory, "received-1.eml")
            with open(path + ".tmp", "wb") as file:
                file.write(envelope.original_content or envelope.content)
            os.rename(path + ".tmp", path)
            await asyncio.sleep(3600)
        refuse = (self.mode == "550") or (self.mode == "451-once" and self.count == 1)
        kind = "refused" if refuse else "accepted"
        path = os.path.join(self.directory, f"{kind}-{self.count}.eml")
        with open(path + ".tmp", "wb") as file:
            file.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        if self.mode == "550":
            return "550 5.1.1 mailbox unavailable (test relay)"
        if refuse:
            return "451 4.3.0 try again later (test relay)"
        return "250 OK"


async def main():
    directory, mode = sys.argv[1], sys.argv[2]
    handler = Handler(directory, mode)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=True, data_size_limit=64 * 1024 * 1024),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(directory, "port.tmp"), "w") as file:
        file.write(str(port))
    os.rename(os.path.join(directory, "port.tmp"), os.path.join(directory, "port"))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
