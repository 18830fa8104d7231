"""`orderpush loadtest`: many protocol-speaking WebSocket clients, order
traffic, and a report of what every connection received.

Modules: `config` (what a run does, every bound and check), `cli` (flags,
exit codes), `clients` (the WebSocket clients), `traffic` (events to the bus
or orders through the API), `ledger` (expected vs. received, no I/O),
`report` (figures, verdict, text and JSON), `runner` (`run_loadtest`, the
core shared by the command line, the tests and the benchmarks).
"""
