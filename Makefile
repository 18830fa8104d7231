# ---- services (Redis + single-node Kafka on 127.0.0.1): scripts/services.sh ----
.PHONY: services services-down services-status browser

services:
	bash scripts/services.sh start

services-down:
	bash scripts/services.sh stop

services-status:
	bash scripts/services.sh status

# ---- browser for UI tests: Debian's chromium + playwright-core in tests/browser ----
browser:
	bash scripts/install-browser.sh
