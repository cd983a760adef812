"""The chat widget in a real browser (headless Chromium driven by Playwright):
open the demo page, send a message, see it in the agent queue, answer with
`router reply`, see the answer appear in the page, reload the page and see
the whole conversation drawn again. A screenshot is saved to test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
import redis as redis_sync

from tests.adapters.chat.test_chat import SECRET, chat_config, entries, until
from tests.adapters.email.mail_servers import SmtpInbox
from tests.support import ROOT, DaemonProcess, RedisServer, cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover
    async_playwright = None  # type: ignore[assignment]

NEEDS_CHROMIUM = (
    "needs Debian's chromium and the playwright package: run scripts/test as root "
    "(it installs them), or `apt-get install --no-install-recommends chromium` and "
    "`scripts/bootstrap test`"
)
pytestmark = pytest.mark.skipif(
    async_playwright is None or not Path(CHROMIUM).exists(),
    reason=NEEDS_CHROMIUM,
)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_widget_in_a_real_browser(tmp_path: Path, redis_server: RedisServer) -> None:
    path, port = chat_config(tmp_path, redis_server.url)
    daemon = DaemonProcess(path, port, env={"CHAT_SECRET": SECRET}).start()
    r: redis_sync.Redis = redis_server.client()
    shots = ROOT / "test-artifacts"
    shots.mkdir(exist_ok=True)
    assert async_playwright is not None
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = await browser.new_page(
                viewport={"width": 390, "height": 844},
                locale="pt-BR",
                timezone_id="America/Sao_Paulo",
            )
            await page.goto(f"{daemon.url}/chat/demo")
            await page.get_by_role("button", name="Chat with us").click()
            box = page.get_by_label("Your message")
            await box.fill("Olá, meu pedido 1234 ainda não chegou. Podem verificar?")
            await box.press("Enter")
            (entry,) = await until(
                lambda: entries(r, "support-en"), timeout=20, what="the message in the agent queue"
            )
            msg = r.hgetall(f"router:msg:{{{entry['message_id']}}}")
            assert msg["text"].startswith("Olá, meu pedido 1234")
            assert '"timezone":"America/Sao_Paulo"' in msg["hints"]
            # the acknowledgement with the ETA, in Portuguese, in the customer's zone
            # (the offset, not CLDR's words around it: tests/routing/test_acks.py pins those)
            log = page.get_by_role("log", name="Conversation")
            await log.get_by_text("-03:00").wait_for(timeout=15000)
            out = cli(
                daemon.config,
                "reply",
                entry["conversation_id"],
                "--text",
                "Olá! Seu pedido sai hoje.",
                "--agent",
                "bia",
            )
            assert out.returncode == 0, out.stderr
            await log.get_by_text("Olá! Seu pedido sai hoje.").wait_for(timeout=15000)
            # a reload (issue 13): the conversation is drawn again, each message once,
            # in order: the question, the acknowledgement, the answer
            await page.reload()
            await page.get_by_role("button", name="Chat with us").click()
            log = page.get_by_role("log", name="Conversation")
            await log.get_by_text("Olá! Seu pedido sai hoje.").wait_for(timeout=15000)
            bubbles = await log.locator(".rc-msg").all_inner_texts()
            assert len(bubbles) == 3, bubbles
            assert bubbles[0].startswith("Olá, meu pedido 1234")
            assert "-03:00" in bubbles[1]
            assert bubbles[2] == "Olá! Seu pedido sai hoje."
            assert await log.locator(".rc-me").count() == 1
            await page.screenshot(path=str(shots / "chat-widget.png"))
            # keyboard: Escape closes the panel and gives focus back to the button
            await page.keyboard.press("Escape")
            assert (
                await page.get_by_role("button", name="Chat with us").get_attribute("aria-expanded")
                == "false"
            )
            await browser.close()
    finally:
        daemon.stop()
    assert (shots / "chat-widget.png").stat().st_size > 10_000
    await asyncio.sleep(0)


async def test_widget_confirms_a_typed_address_with_the_emailed_code(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The "answer me by e-mail" field asks for the code e-mailed to the
    address; only the right code makes the address the visitor's."""
    smtp = SmtpInbox().start()
    path, port = chat_config(
        tmp_path,
        redis_server.url,
        **{
            "channels.email": {
                "enabled": True,
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from_address": "support@example.com",
                },
            }
        },
    )
    daemon = DaemonProcess(path, port, env={"CHAT_SECRET": SECRET}).start()
    r: redis_sync.Redis = redis_server.client()
    assert async_playwright is not None
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = await browser.new_page()
            await page.goto(f"{daemon.url}/chat/demo")
            await page.get_by_role("button", name="Chat with us").click()
            field = page.locator("#rc-email")
            await field.fill("ana@example.com")
            await field.press("Enter")
            await page.get_by_text("We e-mailed a code to ana@example.com").wait_for(timeout=15000)
            ((_, to, mail),) = await asyncio.to_thread(smtp.wait, 1)
            assert to == ["ana@example.com"]
            code = re.search(r"Your code: (\d+)", mail.get_body(("plain",)).get_content())
            assert code is not None
            assert r.get("router:identity:email:ana@example.com") is None  # only a claim
            assert await field.get_attribute("autocomplete") == "one-time-code"
            await field.fill("000000" if code.group(1) != "000000" else "111111")
            await field.press("Enter")
            await page.get_by_text("that code is not right; 4 tries left").wait_for(timeout=5000)
            await field.fill(code.group(1))
            await field.press("Enter")
            await page.get_by_text("we will answer at ana@example.com").wait_for(timeout=5000)
            assert await field.is_hidden()
            await until(
                lambda: r.get("router:identity:email:ana@example.com"),
                what="the proven address as an identity",
            )
            await browser.close()
    finally:
        daemon.stop()
        smtp.stop()
