# Admin web page: browser tests (Playwright driving Debian's Chromium, /usr/bin/chromium).
# Included from the Makefile with `-include mk/browser.mk`.
.PHONY: test-browser

test-browser: services-up ## admin page in a real browser; screenshots in artifacts/screenshots/
	@if grep -q '^image:' mk/image.mk 2>/dev/null; then $(MAKE) --no-print-directory image; fi
	$(PY) -m pytest tests/browser -q -p no:cacheprovider $(PYTEST_ARGS)
