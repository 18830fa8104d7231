"""The entry package above everything: the `orderpush` command line, serving
(uvicorn, workers), and the assembly of the apps: the gateway with its pages,
the stubs' storefront app, the demo. Nothing below imports it."""
