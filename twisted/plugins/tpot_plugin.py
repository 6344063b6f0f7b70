from twisted.application.service import ServiceMaker

tpot = ServiceMaker(
    "TPoT tunnel server",
    "tpot.server.tap",
    "Expose local HTTP and raw TCP services through tunnels on one port (TPoT/1).",
    "tpot",
)
