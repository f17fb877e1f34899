"""Problem families about counting things and money: tickets, shopping, boxes, gardens, sharing,
ages, a shop's stock, baking by the dozen, coins.

Each family takes a `Builder` and a step count (2-5), records quantities and steps, and
returns the question; it raises `GiveUp` when the draw makes no sensible problem. Frames
name only their own step's quantities, so the steps before an error read the same in the
correct and the incorrect solution.
"""

from __future__ import annotations

from cot_transplant.data.builder import Builder, GiveUp, join, products_plan

RIDES = ("roller coaster", "giant slide", "Ferris wheel", "bumper cars", "carousel", "log flume", "drop tower",
         "haunted house")
GOODS = (("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("sandwich", "sandwiches"),
         ("comic book", "comic books"), ("candle", "candles"), ("toy car", "toy cars"), ("mango", "mangoes"),
         ("bottle of juice", "bottles of juice"), ("pair of socks", "pairs of socks"))
CONTAINERS = (("boxes", "crayons"), ("jars", "marbles"), ("bags", "balloons"), ("packs", "stickers"),
              ("cases", "pencils"))
COLORS = ("red", "blue", "green", "orange", "yellow", "purple")
CROPS = ("tomato", "pepper", "lettuce", "carrot", "bean", "onion", "cabbage")
SHARED = ("stickers", "cookies", "marbles", "trading cards", "grapes", "beads", "pencils")
SHOPS = (("bookshop", "books"), ("toy store", "board games"), ("florist", "roses"), ("hardware store", "hammers"),
         ("farm stand", "melons"), ("bakery", "loaves"))
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
TREATS = ("cookies", "muffins", "cupcakes", "bagels", "brownies")
SMALL_BUYS = (("gumball", "gumballs"), ("lollipop", "lollipops"), ("stamp", "stamps"), ("eraser", "erasers"),
              ("sticker", "stickers"))
BILLS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _bill_above(b: Builder, amount) -> int:
    """The smallest common bill that pays `amount` with change left over."""
    bill = next((x for x in BILLS if x > amount), None)
    if bill is None:
        raise GiveUp
    return bill


def tickets(b: Builder, n: int) -> str:
    p, minus = products_plan(b.rng, n)
    who, rides = b.person(), b.rng.sample(RIDES, p)
    style = b.rng.randrange(2)
    parts = []
    for i, ride in enumerate(rides):
        b.q(f"cost{i}", b.small(), rate=True)
        b.q(f"times{i}", b.small())
        frame = (f"To ride the {ride} {{times{i}}} times, {who.he} needs {{e}} tickets." if style == 0
                 else f"The {ride} rides take {{e}} tickets.")
        parts.append(b.step((f"times{i}", f"cost{i}"), "*", frame))
    total = parts[0]
    if p > 1:
        total = b.step(parts, "+", b.pick(f"Therefore, {who.name} needs {{e}} tickets.", f"In total, {who.he} needs {{e}} tickets."))
    if minus:
        b.q("have", b.count(hi=min(b.hi, int(b.val(total)) - 1)))
        b.step((total, "have"), "-", f"Since {who.he} already has {{have}} tickets, {who.he} needs {{e}} more.")
    more = "more " if minus else ""
    if b.short:
        rides_text = join([f"the {r} {b.t(f'times{i}')} times at {b.t(f'cost{i}')} tickets a ride" for i, r in enumerate(rides)])
        has = f" {who.He} has {b.t('have')} tickets." if minus else ""
        return f"{who.name} rides {rides_text}.{has} How many {more}tickets does {who.he} need?"
    costs = join([f"{b.t(f'cost{i}')} tickets to ride the {r}" for i, r in enumerate(rides)])
    has = f" {who.He} already has {b.t('have')} tickets." if minus else ""
    times = join([f"the {r} {b.t(f'times{i}')} times" for i, r in enumerate(rides)])
    return f"{who.name} needs {costs}.{has} How many {more}tickets does {who.he} need to ride {times}?"


def shopping(b: Builder, n: int) -> str:
    p, minus = products_plan(b.rng, n)
    who, goods = b.person(), b.rng.sample(GOODS, p)
    parts = []
    for i, (_, plural) in enumerate(goods):
        b.q(f"num{i}", b.small())
        b.q(f"price{i}", b.price(), rate=True)
        parts.append(b.step((f"num{i}", f"price{i}"), "*", b.pick(f"The {plural} cost {{e}} dollars.",
                                                                  f"For the {plural}, {who.he} pays {{e}} dollars.")))
    total = parts[0] if p == 1 else b.step(parts, "+", f"Altogether, {who.he} spends {{e}} dollars.")
    if minus:
        b.q("bill", _bill_above(b, b.val(total)))
        b.step(("bill", total), "-", f"From a {{bill}}-dollar bill, {who.his} change is {{e}} dollars.")
    items = join([f"{b.t(f'num{i}')} {pl} at {b.usd(f'price{i}')} each" for i, (_, pl) in enumerate(goods)])
    lead = f"{who.name} buys" if b.short else b.pick(f"{who.name} buys", f"At the market, {who.name} buys")
    ask = (f" {who.He} pays with a {b.usd('bill')} bill. How much change does {who.he} get?" if minus
           else f" How much does {who.he} spend?")
    return f"{lead} {items}.{ask}"


def boxes(b: Builder, n: int) -> str:
    p, minus = products_plan(b.rng, n)
    who, (box, thing), colors = b.person(), b.pick(*CONTAINERS), b.rng.sample(COLORS, p)
    parts = []
    for i, color in enumerate(colors):
        b.q(f"boxes{i}", b.small())
        b.q(f"per{i}", b.count(), rate=True)
        parts.append(b.step((f"boxes{i}", f"per{i}"), "*", b.pick(f"There are {{e}} {color} {thing}.",
                                                                  f"The {color} {thing} come to {{e}}.")))
    total = parts[0] if p == 1 else b.step(parts, "+", f"In total, there are {{e}} {thing}.")
    if minus:
        b.q("gone", b.count(hi=min(b.hi, int(b.val(total)) - 1)))
        b.step((total, "gone"), "-", f"After giving away {{gone}}, {who.name} has {{e}} {thing} left.")
    groups = join([f"{b.t(f'boxes{i}')} {box} with {b.t(f'per{i}')} {c} {thing} in each" for i, c in enumerate(colors)])
    if minus:
        ask = f" {who.He} gives away {b.t('gone')} {thing}. How many {thing} does {who.he} have left?"
    else:
        ask = f" How many {thing} does {who.he} have{'' if b.short else ' in total'}?"
    return f"{who.name} has {groups}.{ask}"


def garden(b: Builder, n: int) -> str:
    p, minus = products_plan(b.rng, n)
    who, crops = b.person(), b.rng.sample(CROPS, p)
    parts = []
    for i, crop in enumerate(crops):
        b.q(f"rows{i}", b.small())
        b.q(f"per{i}", b.count(), rate=True)
        parts.append(b.step((f"rows{i}", f"per{i}"), "*", b.pick(f"The {crop} rows hold {{e}} plants.",
                                                                 f"{who.He} plants {{e}} {crop} plants.")))
    total = parts[0] if p == 1 else b.step(parts, "+", "That makes {e} plants in all.")
    if minus:
        b.q("eaten", b.count(hi=min(b.hi, int(b.val(total)) - 1)))
        b.step((total, "eaten"), "-", "After the rabbits eat {eaten}, {e} plants are left.")
    rows = join([f"{b.t(f'rows{i}')} rows of {b.t(f'per{i}')} {c} plants" for i, c in enumerate(crops)])
    ask = (f" Rabbits eat {b.t('eaten')} of them. How many plants are left?" if minus
           else f" How many plants does {who.he} plant?")
    return f"{who.name} plants {rows}.{ask}"


def sharing(b: Builder, n: int) -> str:
    who, thing = b.person(), b.pick(*SHARED)
    kinds, keep = (1 if n <= 3 else 2), n in (3, 5)
    parts = []
    for i, pack in enumerate(("packs", "boxes")[:kinds]):
        b.q(f"packs{i}", b.small())
        b.q(f"per{i}", b.count(), rate=True)
        parts.append(b.step((f"packs{i}", f"per{i}"), "*", f"The {pack} hold {{e}} {thing}."))
    total = parts[0] if kinds == 1 else b.step(parts, "+", f"That is {{e}} {thing} in all.")
    if keep:
        b.q("keep", b.count(hi=min(b.hi, int(b.val(total)) - 2)))
        total = b.step((total, "keep"), "-", f"After keeping {{keep}}, {who.he} has {{e}} {thing} to share.")
    b.q("friends", b.divisor(b.val(total), 2, b.small_hi))
    b.step((total, "friends"), "/", f"Each of the {{friends}} friends gets {{e}} {thing}.")
    packs = join([f"{b.t(f'packs{i}')} {pack} of {thing} with {b.t(f'per{i}')} in each"
                  for i, pack in enumerate(("packs", "boxes")[:kinds])])
    kept = f" keeps {b.t('keep')} for {who.him}self and" if keep else ""
    return (f"{who.name} buys {packs}. {who.He}{kept} shares {'the rest' if keep else 'them'} equally among "
            f"{b.t('friends')} friends. How many {thing} does each friend get?")


def ages(b: Builder, n: int) -> str:
    future = b.rng.random() < 0.5
    people = [b.person() for _ in range(n + 1 - future)]
    b.q("age0", b.count(hi=min(b.hi, 40)))
    prev, sentences, times_used = "age0", [], 0
    for j in range(1, len(people)):
        older, younger = people[j].name, people[j - 1].name
        age = b.val(prev)
        kinds = ["older"] + (["younger"] if age > b.lo + 1 else []) + (["times"] if age <= 30 and times_used < 2 else [])
        kind = b.rng.choice(kinds)
        if kind == "times":
            times_used += 1
            b.q(f"k{j}", b.count(2, 4))
            sentences.append(f"{older} is {b.t(f'k{j}')} times as old as {younger}.")
            prev = b.step((prev, f"k{j}"), "*", f"{older} is {{e}} years old.")
        elif kind == "older":
            b.q(f"d{j}", b.count(hi=min(b.hi, 30)))
            sentences.append(f"{older} is {b.t(f'd{j}')} years older than {younger}.")
            prev = b.step((prev, f"d{j}"), "+", f"{older} is {{e}} years old.")
        else:
            b.q(f"d{j}", b.count(hi=min(b.hi, int(age) - 1)))
            sentences.append(f"{older} is {b.t(f'd{j}')} years younger than {younger}.")
            prev = b.step((prev, f"d{j}"), "-", f"{older} is {{e}} years old.")
    last = people[-1].name
    if future:
        b.q("years", b.small())
        b.step((prev, "years"), "+", f"In {{years}} years, {last} will be {{e}} years old.")
    if any(v > 120 for v in map(b.val, [f"@{j}" for j in range(1, n + 1)])):
        raise GiveUp
    ask = f"How old will {last} be in {b.t('years')} years?" if future else f"How old is {last}?"
    return f"{people[0].name} is {b.t('age0')} years old. {' '.join(sentences)} {ask}"


def stock(b: Builder, n: int) -> str:
    (shop, thing), days = b.pick(*SHOPS), iter(DAYS)
    b.q("start", b.count(lo=max(b.lo, 10), hi=max(b.hi, 20) * 3))
    prev, sentences, left, j = "start", [], n, 0
    while left:
        day, j = next(days), j + 1
        event = b.rng.choice(["sell", "receive"] + (["boxes"] if left >= 2 else []))
        if event == "sell" and b.val(prev) > b.lo + 1:
            b.q(f"sold{j}", b.count(hi=min(b.hi, int(b.val(prev)) - 1)))
            sentences.append(f"On {day} it sells {b.t(f'sold{j}')}.")
            prev = b.step((prev, f"sold{j}"), "-", f"After {day}'s sales, the {shop} has {{e}} {thing}.")
            left -= 1
        elif event == "boxes":
            b.q(f"boxes{j}", b.small())
            b.q(f"per{j}", b.small(), rate=True)
            sentences.append(f"On {day} {b.t(f'boxes{j}')} boxes of {b.t(f'per{j}')} {thing} arrive.")
            got = b.step((f"boxes{j}", f"per{j}"), "*", f"The {day} delivery brings {{e}} {thing}.")
            prev = b.step((prev, got), "+", f"Then the {shop} has {{e}} {thing}.")
            left -= 2
        else:
            b.q(f"got{j}", b.count())
            sentences.append(f"On {day} it gets {b.t(f'got{j}')} more.")
            prev = b.step((prev, f"got{j}"), "+", f"After {day}'s delivery, it has {{e}} {thing}.")
            left -= 1
    return f"A {shop} has {b.t('start')} {thing}. {' '.join(sentences)} How many {thing} does it have now?"


def baking(b: Builder, n: int) -> str:
    who, treat = b.person(), b.pick(*TREATS)
    b.q("dozens", b.small())
    b.unit("per_dozen", 12)
    baked = b.step(("dozens", "per_dozen"), "*", f"{{dozens}} dozen is {{e}} {treat}.")
    b.q("eaten", b.count(hi=min(b.hi, int(b.val(baked)) - 2)))
    left = b.step((baked, "eaten"), "-", f"After {{eaten}} are eaten, {{e}} {treat} are left.")
    text = f"{who.name} bakes {b.t('dozens')} dozen {treat}. {who.His} family eats {b.t('eaten')} of them."
    ask = f"How many {treat} are left?"
    if n >= 3:
        b.q("bag", b.divisor(b.val(left), 2, 12), rate=True)
        left = b.step((left, "bag"), "/", f"With {{bag}} in a bag, that fills {{e}} bags.")
        text += f" {who.He} puts the rest in bags of {b.t('bag')}."
        ask = f"How many bags does {who.he} fill?"
    if n >= 4:
        b.q("price", b.price(10), rate=True)
        left = b.step((left, "price"), "*", "Selling them brings in {e} dollars.")
        text += f" {who.He} sells each bag for {b.usd('price')}."
        ask = f"How much money does {who.he} make?"
    if n >= 5:
        b.q("cost", b.count(1, int(b.val(left)) - 1))
        b.step((left, "cost"), "-", f"After {{cost}} dollars for ingredients, {who.his} profit is {{e}} dollars.")
        text += f" The ingredients cost {b.usd('cost')}."
        ask = f"What is {who.his} profit?"
    return f"{text} {ask}"


def coins(b: Builder, n: int) -> str:
    who = b.person()
    kinds, change = (1 if n <= 3 else 2), n in (3, 5)
    buys = b.rng.sample(SMALL_BUYS, kinds)
    parts = []
    for i, (_, plural) in enumerate(buys):
        b.q(f"num{i}", b.small())
        b.q(f"cents{i}", b.count(lo=max(b.lo, 5), hi=95), rate=True)
        parts.append(b.step((f"num{i}", f"cents{i}"), "*", f"The {plural} cost {{e}} cents."))
    total = parts[0] if kinds == 1 else b.step(parts, "+", "Together that is {e} cents.")
    b.unit("cents_per_dollar", 100)
    dollars = b.step((total, "cents_per_dollar"), "/", "In dollars, that is {e}.")
    items = join([f"{b.t(f'num{i}')} {pl} for {b.t(f'cents{i}')} cents each" for i, (_, pl) in enumerate(buys)])
    if change:
        b.q("bill", _bill_above(b, b.val(dollars)))
        b.step(("bill", dollars), "-", f"From the {{bill}}-dollar bill, {who.his} change is {{e}} dollars.")
        return f"{who.name} buys {items}. {who.He} pays with a {b.usd('bill')} bill. How much change in dollars does {who.he} get?"
    return f"{who.name} buys {items}. How many dollars does {who.he} spend?"


QUESTION_FAMILIES = {"tickets": tickets, "shopping": shopping, "boxes": boxes, "garden": garden, "sharing": sharing,
                     "ages": ages, "stock": stock, "baking": baking, "coins": coins}
