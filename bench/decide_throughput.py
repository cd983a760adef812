"""Benchmark: routing decisions per second on the example config, one core.

    .venv/bin/python bench/decide_throughput.py [--decisions 20000]

Runs the pure ``decide`` (language detection, time zone, rules, follow-the-
sun, business-time due date, acknowledgement text) over a realistic mix:
nine languages, short replies to long complaints, phones, e-mail and chat,
new and ongoing conversations, spread over a week of instants. It runs the
same mix twice, with 1,000 and with 1,000,000 distinct customers and
conversations, to show that the time does not grow with them (decide keeps
no per-customer state). Pinned to one CPU when the machine has several.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.config import load_config  # noqa: E402
from router.model import Hints, InboundMessage  # noqa: E402
from router.profiles.context import Context  # noqa: E402
from router.profiles.identity import normalise_identity  # noqa: E402
from router.routing import Routing, decide  # noqa: E402

TEXTS = {
    "en": [
        "ok thanks",
        "Hi, my order never arrived and I need it urgently for a birthday on Saturday.",
        "I was charged twice for the same subscription this month. Could you please refund "
        "the second payment? I have attached the bank statement showing both charges.",
    ],
    "es": [
        "Hola, mi pedido no ha llegado todavía, ¿me pueden ayudar por favor?",
        "Quiero cancelar mi suscripción y recibir el reembolso del último mes.",
    ],
    "pt": [
        "Oi, meu pedido ainda não chegou, podem me ajudar?",
        "Gostaria de trocar o produto, veio com defeito e a caixa estava amassada.",
    ],
    "hi": ["नमस्ते, मेरा ऑर्डर अभी तक नहीं आया है, कृपया मदद करें।"],
    "te": ["నమస్తే, నా ఆర్డర్ ఇంకా రాలేదు. దయచేసి సహాయం చేయండి."],
    "gu": ["નમસ્તે, મારો ઓર્ડર હજુ સુધી આવ્યો નથી, કૃપા કરીને મદદ કરો."],
    "lv": ["Labdien, mans pasūtījums vēl nav pienācis, lūdzu palīdziet.", "Paldies!"],
    "ru": ["Здравствуйте, мой заказ до сих пор не доставлен, помогите пожалуйста."],
    "ja": ["こんにちは、先週注文した靴がまだ届いていません。確認していただけますか？", "はい"],
}
PHONES = {
    "en": "+12125550100",
    "es": "+12125550101",
    "pt": "+5511987654321",
    "hi": "+919812345678",
    "te": "+919812345679",
    "gu": "+919812345680",
    "lv": "+37129123456",
    "ru": "+37129123457",
    "ja": "+81312345678",
}


def workload(n: int, customers: int, seed: int = 7) -> list[tuple[InboundMessage, Context, float]]:
    rng = random.Random(seed)
    start = 1795000000.0  # a week of instants from here
    out = []
    for _ in range(n):
        lang = rng.choice(list(TEXTS))
        text = rng.choice(TEXTS[lang])
        channel = rng.choice(["sms", "email", "chat", "api"])
        c = rng.randrange(customers)
        if channel == "email":
            sender = normalise_identity(f"customer{c}@example.com", "email")
            hints = Hints(date_offset=rng.choice(["+05:30", "-05:00", "+02:00", None]))
        else:
            sender = (
                normalise_identity(PHONES[lang], "sms")
                if channel == "sms"
                else normalise_identity(f"visitor-{c}", "api")
            )
            hints = Hints(timezone="Asia/Tokyo" if channel == "chat" and lang == "ja" else None)
        now = start + rng.random() * 7 * 86400
        ongoing = rng.random() < 0.4
        conversation = (
            {"id": f"v{c}", "status": "open", "language": lang, "last_activity": str(now - 300)}
            if ongoing
            else {}
        )
        customer = {"id": f"c{c}", "tier": "vip" if rng.random() < 0.02 else ""}
        msg = InboundMessage(channel=channel, sender=sender, text=text, hints=hints)
        out.append((msg, Context(f"c{c}", False, customer, conversation), now))
    return out


def run(routing: Routing, items: list) -> list[float]:
    times = []
    for msg, ctx, now in items:
        t0 = time.perf_counter()
        decide(routing, msg, ctx, now)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=20000)
    args = ap.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    env = {"ROUTER_API_TOKEN": "bench", "CHAT_SECRET": "bench"}
    cfg = load_config(ROOT / "config" / "example.yaml", env=env)
    t0 = time.perf_counter()
    routing = Routing.build(cfg, frozenset({"sms", "email", "chat", "api"}))
    print(
        f"compiled the example config (lingua for {len(cfg.routing.languages)} languages) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    run(routing, workload(2000, 100, seed=1))  # warm the calendars' day caches
    print(f"\n{args.decisions} decisions, one core, Python {sys.version.split()[0]}\n")
    print(f"{'customers':>12} {'decisions/s':>12} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8}")
    for customers in (1_000, 1_000_000):
        items = workload(args.decisions, customers)
        times = run(routing, items)
        times.sort()
        total = sum(times)
        print(
            f"{customers:>12,} {len(times) / total:>12,.0f} "
            f"{times[len(times) // 2] * 1e6:>8.0f} {times[int(len(times) * 0.99)] * 1e6:>8.0f} "
            f"{statistics.mean(times) * 1e6:>8.0f}"
        )


if __name__ == "__main__":
    main()
