"""Problem families about rates, units and scaling: travel, machines, areas, wages, recipes, unit
prices, fuel, practice time. Same contract as `families_counts`."""

from __future__ import annotations

from decimal import Decimal

from cot_transplant.data.builder import Builder, GiveUp, join

MODES = (("drives", "miles per hour", "miles"), ("rides a bus", "kilometers per hour", "kilometers"),
         ("takes a train", "miles per hour", "miles"), ("cycles", "kilometers per hour", "kilometers"))
LEG_PLANS = {2: [("M",)], 3: [("H", "H")], 4: [("H", "M"), ("M", "H"), ("H", "H", "H")],
             5: [("M", "M"), ("H", "H", "M"), ("M", "H", "H")]}
MACHINES = (("machine", "bottles"), ("printer", "pages"), ("robot", "parts"), ("oven", "rolls"), ("loom", "scarves"))
PLACES = (("garden", "patio"), ("living room", "hallway"), ("lawn", "flower bed"), ("kitchen", "pantry"))
MATERIALS = ("carpet", "turf", "tile", "mulch")
JOBS = ("at a cafe", "at the library", "as a tutor", "at a bike shop", "at a pet store")
BAKES = ("pancakes", "cookies", "muffins", "biscuits", "waffles")
PACKS = (("pack", "pens"), ("carton", "eggs"), ("box", "batteries"), ("box", "tea bags"), ("set", "candles"))
ACTIVITIES = ("piano", "guitar", "swimming", "chess", "painting", "running", "drawing")


def travel(b: Builder, n: int) -> str:
    who, (verb, speed_unit, dist) = b.person(), b.pick(*MODES)
    b.unit("minutes_per_hour", 60)
    legs, parts, phrases = b.rng.choice(LEG_PLANS[n]), [], []
    for i, leg in enumerate(legs):
        b.q(f"speed{i}", b.count(), rate=True)
        if leg == "H":
            b.q(f"hours{i}", b.small())
            parts.append(b.step((f"hours{i}", f"speed{i}"), "*",
                                f"In {{hours{i}}} hours at {{speed{i}}} {speed_unit}, {who.he} covers {{e}} {dist}."))
            phrases.append(f"for {b.t(f'hours{i}')} hours at {b.t(f'speed{i}')} {speed_unit}")
        else:
            # Minutes a multiple of 3 make the hours a finite decimal (45 / 60 = 0.75).
            b.q(f"minutes{i}", 3 * b.count(lo=max(2, -(-b.lo // 3)), hi=max(3, b.hi)))
            hours = b.step((f"minutes{i}", "minutes_per_hour"), "/", f"{{minutes{i}}} minutes is {{e}} hours.")
            parts.append(b.step((hours, f"speed{i}"), "*", f"At {{speed{i}}} {speed_unit}, that is {{e}} {dist}."))
            phrases.append(f"for {b.t(f'minutes{i}')} minutes at {b.t(f'speed{i}')} {speed_unit}")
    if len(parts) > 1:
        b.step(parts, "+", f"Altogether, {who.he} travels {{e}} {dist}.")
    return f"{who.name} {verb} {', then '.join(phrases)}. How many {dist} does {who.he} travel{' in total' if len(legs) > 1 else ''}?"


def machine(b: Builder, n: int) -> str:
    device, item = b.pick(*MACHINES)
    b.q("per_minute", b.small(), rate=True)
    b.q("hours", b.small())
    b.unit("minutes_per_hour", 60)
    minutes = b.step(("hours", "minutes_per_hour"), "*", "In {hours} hours there are {e} minutes.")
    made = b.step((minutes, "per_minute"), "*", f"At {{per_minute}} {item} a minute, it makes {{e}} {item} a day.")
    article = "An" if device[0] in "aeiou" else "A"
    text = f"{article} {device} makes {b.t('per_minute')} {item} per minute. It runs {b.t('hours')} hours a day"
    ask = f"How many {item} does it make in a day?"
    if n >= 3:
        b.q("days", b.small())
        made = b.step((made, "days"), "*", f"Over {{days}} days, that is {{e}} {item}.")
        text += f" for {b.t('days')} days"
        ask = f"How many {item} does it make in {b.t('days')} days?"
    text += "."
    if n >= 4:
        b.q("box", b.divisor(b.val(made), 2, max(12, b.hi)), rate=True)
        made = b.step((made, "box"), "/", "Packed {box} to a box, they fill {e} boxes.")
        text += f" The {item} are packed in boxes of {b.t('box')}."
        ask = "How many boxes are filled?"
    if n >= 5:
        b.q("price", b.price(), rate=True)
        b.step((made, "price"), "*", "Selling the boxes brings in {e} dollars.")
        text += f" Each box sells for {b.usd('price')}."
        ask = "How much money do the boxes bring in?"
    return f"{text} {ask}"


def area(b: Builder, n: int) -> str:
    who, places, material = b.person(), b.pick(*PLACES), b.pick(*MATERIALS)
    yards = n == 5 or (n == 3 and b.rng.random() < 0.5)
    rooms = 1 if n == 2 or (n == 3 and yards) else 2
    scale = 3 if yards else 1  # sides in multiples of 3 feet make whole square yards
    parts, shapes = [], []
    for i, place in enumerate(places[:rooms]):
        b.q(f"long{i}", scale * b.count(hi=max(b.lo, b.hi // scale)))
        b.q(f"wide{i}", scale * b.count(hi=max(b.lo, b.hi // scale)))
        parts.append(b.step((f"long{i}", f"wide{i}"), "*", f"The {place} covers {{e}} square feet."))
        shapes.append(f"{who.his} {place} ({b.t(f'long{i}')} feet by {b.t(f'wide{i}')} feet)")
    total = parts[0] if rooms == 1 else b.step(parts, "+", "Together they cover {e} square feet.")
    unit = "square foot"
    if yards:
        b.unit("sqft_per_sqyd", 9)
        total = b.step((total, "sqft_per_sqyd"), "/", "That is {e} square yards.")
        unit = "square yard"
    text = f"{who.name} wants to cover {join(shapes)} with {material}."
    if n == 3 and not yards:
        return f"{text} How many square feet is that?"
    b.q("price", b.price(10), rate=True)
    b.step((total, "price"), "*", f"At {{price}} dollars a {unit}, the {material} costs {{e}} dollars.")
    return f"{text} The {material} costs {b.usd('price')} per {unit}. How much does the {material} cost?"


def wages(b: Builder, n: int) -> str:
    who = b.person()
    b.q("wage", b.price(30), rate=True)
    b.q("hours", b.small())
    day = b.step(("wage", "hours"), "*", f"{who.He} earns {{e}} dollars a day.")
    b.q("days", b.count(2, 7))
    total = b.step((day, "days"), "*", f"In a week, {who.he} earns {{e}} dollars.")
    text = (f"{who.name} works {b.pick(*JOBS)} for {b.usd('wage')} an hour, {b.t('hours')} hours a day, "
            f"{b.t('days')} days a week.")
    ask = f"How much does {who.he} earn in a week?"
    if n >= 3:
        b.q("spend", b.count(1, int(b.val(total)) - 1))
        total = b.step((total, "spend"), "-", f"After spending {{spend}} dollars, {who.he} saves {{e}} dollars a week.")
        text += f" {who.He} spends {b.usd('spend')} of it each week."
        ask = f"How much does {who.he} save in a week?"
    if n >= 4:
        b.q("weeks", b.small())
        total = b.step((total, "weeks"), "*", f"In {{weeks}} weeks, {who.he} saves {{e}} dollars.")
        ask = f"How much does {who.he} save in {b.t('weeks')} weeks?"
    if n >= 5:
        b.q("bonus", b.count())
        b.step((total, "bonus"), "+", f"With the {{bonus}}-dollar bonus, {who.he} has {{e}} dollars.")
        text += f" At the end {who.he} also gets a {b.usd('bonus')} bonus."
        ask = f"How much money does {who.he} have after {b.t('weeks')} weeks?"
    return f"{text} {ask}"


def recipe(b: Builder, n: int) -> str:
    who, bake = b.person(), b.pick(*BAKES)
    b.q("serves", b.small())
    b.q("want", b.val("serves") * b.small())
    batches = b.step(("want", "serves"), "/", f"{{want}} {bake} take {{e}} batches.")
    b.q("flour", Decimal(b.rng.randint(2, 8)) / 2, rate=True)  # cups per batch, in halves
    total = b.step((batches, "flour"), "*", "That needs {e} cups of flour.")
    text = f"A recipe for {b.t('serves')} {bake} uses {b.t('flour')} cups of flour"
    what = "flour"
    if n >= 4:
        b.q("sugar", Decimal(b.rng.randint(1, 6)) / 2, rate=True)
        sugar = b.step((batches, "sugar"), "*", "It also needs {e} cups of sugar.")
        total = b.step((total, sugar), "+", "That is {e} cups of flour and sugar together.")
        text += f" and {b.t('sugar')} cups of sugar"
        what = "flour and sugar"
    text += f". {who.name} wants to make {b.t('want')} {bake}."
    if n in (3, 5):
        b.q("have", Decimal(b.rng.randint(1, int(2 * b.val(total)) - 1)) / 2)
        b.step((total, "have"), "-", f"{who.He} has {{have}} cups, so {who.he} needs {{e}} more cups.")
        return f"{text} {who.He} has {b.t('have')} cups of {what}. How many more cups of {what} does {who.he} need?"
    return f"{text} How many cups of {what} does {who.he} need?"


def unit_price(b: Builder, n: int) -> str:
    who = b.person()
    kinds = 2 if n == 5 else 1
    packs = b.rng.sample(PACKS, kinds)
    parts, facts, buys = [], [], []
    for i, (pack, things) in enumerate(packs):
        b.q(f"size{i}", b.small(), rate=True)
        b.q(f"pack{i}", b.val(f"size{i}") * b.price(5))
        each = b.step((f"pack{i}", f"size{i}"), "/", f"One of the {things} costs {{e}} dollars.")
        b.q(f"buy{i}", b.small())
        parts.append(b.step((each, f"buy{i}"), "*", f"{{buy{i}}} {things} cost {{e}} dollars."))
        facts.append(f"A {pack} of {b.t(f'size{i}')} {things} costs {b.usd(f'pack{i}')}.")
        buys.append(f"{b.t(f'buy{i}')} {things}")
    total = parts[0] if kinds == 1 else b.step(parts, "+", "Together that is {e} dollars.")
    text = f"{' '.join(facts)} {who.name} buys {join(buys)} at the same price each."
    if n == 4:
        b.q("fee", b.count(1, 9))
        total = b.step((total, "fee"), "+", "With the {fee}-dollar delivery fee, that is {e} dollars.")
        text += f" Delivery costs {b.usd('fee')}."
    if n in (3, 4):
        b.q("coupon", b.count(1, min(b.hi, int(b.val(total)) - 1)))
        b.step((total, "coupon"), "-", "With the {coupon}-dollar coupon, the bill is {e} dollars.")
        text += f" {who.He} has a {b.usd('coupon')} coupon."
    return f"{text} How much does {who.he} pay?"


def fuel(b: Builder, n: int) -> str:
    who = b.person()
    b.q("mpg", b.count(lo=max(b.lo, 10), hi=max(b.hi, 20)), rate=True)
    total_miles = b.val("mpg") * b.small()
    if n == 2:
        b.q("dist", total_miles)
        dist, trip = "dist", f"drives {b.t('dist')} miles"
    else:
        b.q("there", b.rng.randint(1, int(total_miles) - 1))
        b.q("back", total_miles - b.val("there"))
        dist = b.step(("there", "back"), "+", "The whole trip is {e} miles.")
        trip = f"drives {b.t('there')} miles to the lake and {b.t('back')} miles home"
    gallons = b.step((dist, "mpg"), "/", "At {mpg} miles per gallon, that takes {e} gallons.")
    b.q("gas", b.price(6), rate=True)
    cost = b.step((gallons, "gas"), "*", "At {gas} dollars a gallon, the gas costs {e} dollars.")
    text = f"{who.name}'s car goes {b.t('mpg')} miles per gallon. {who.He} {trip}. Gas costs {b.usd('gas')} per gallon."
    if n == 5:
        b.q("tolls", b.count(1, 20))
        cost = b.step((cost, "tolls"), "+", "With {tolls} dollars of tolls, the trip costs {e} dollars.")
        text += f" Tolls cost {b.usd('tolls')}."
    if n >= 4:
        b.q("people", b.rng.choice((2, 4, 5, 8, 10)))  # a split that keeps cents exact
        b.step((cost, "people"), "/", "Split {people} ways, each pays {e} dollars.")
        return f"{text} The cost is split equally among {b.t('people')} friends. How much does each pay?"
    return f"{text} How much does the gas cost?"


def practice(b: Builder, n: int) -> str:
    who = b.person()
    kinds, weeks = (1 if n <= 3 else 2), n in (3, 5)
    acts = b.rng.sample(ACTIVITIES, kinds)
    parts, habits = [], []
    for i, act in enumerate(acts):
        b.q(f"minutes{i}", 5 * b.count(lo=max(1, b.lo // 5), hi=max(2, b.hi // 5)))
        b.q(f"days{i}", b.count(2, 7))
        parts.append(b.step((f"minutes{i}", f"days{i}"), "*", f"{who.He} spends {{e}} minutes a week on {act}."))
        habits.append(f"{act} for {b.t(f'minutes{i}')} minutes a day, {b.t(f'days{i}')} days a week")
    total = parts[0] if kinds == 1 else b.step(parts, "+", "That is {e} minutes a week.")
    if weeks:
        b.q("weeks", b.small())
        total = b.step((total, "weeks"), "*", "Over {weeks} weeks, that is {e} minutes.")
    b.unit("minutes_per_hour", 60)
    if b.val(total) % 3:  # whole minutes not divisible by 3 give an endless decimal of hours
        raise GiveUp
    b.step((total, "minutes_per_hour"), "/", "That is {e} hours.")
    period = f"in {b.t('weeks')} weeks" if weeks else "a week"
    return f"{who.name} practices {join(habits)}. How many hours does {who.he} practice {period}?"


QUESTION_FAMILIES = {"travel": travel, "machine": machine, "area": area, "wages": wages, "recipe": recipe,
                     "unit_price": unit_price, "fuel": fuel, "practice": practice}
