#!/usr/bin/env python3
"""Integration test of the demo population (`crowdpack demo`, src/cli/demo*.c).

Drives the real binary only (env CROWDPACK):
  - two runs with the same seed give identical counts for a set of
    expressions, a third with another seed does not;
  - the interest taxonomy has exactly 18/124/256/313 tags at levels 1-4
    (levels counted from the level-1 tags under the `interest` root), with
    ASCII slugs and Chinese display names, plus the lifecycle/ and device/
    trees outside those counts;
  - every level-1 tag has members, and the popularity is Zipf-like (some
    level-1 tags held by 30-60% of users, level-4 tags mostly below 1%);
  - demographics: ages 16..70 peaking at 25-35, both genders near 52/48,
    300+ cities and 31+ provinces reached, people within 3 sigma of their
    city centre, member tier consistent with points, registrations in
    2018-2025, lifecycle stages exclusive and consistent with timestamps;
  - interests correlate with age and gender (young women and parenting,
    young men and games).
Python 3 standard library only.
"""
import json
import os
import re

import harness
from harness import check, main

USERS = 20000
SEED = 7


def run(*args, timeout=600):
    return harness.must(*args, timeout=timeout).stdout


def demo(data, seed):
    run("demo", "--data", data, "--users", str(USERS), "--seed", str(seed))


def count(data, expr):
    out = run("count", "--data", data, expr).strip()
    m = re.search(r"\d+", out.replace(",", ""))
    if not m:
        raise RuntimeError("count %r: unexpected output %r" % (expr, out))
    return int(m.group(0))


def tags(data):
    return json.loads(run("tags", "list", "--data", data, "--json"))["tags"]


def attrs(data):
    return {a["name"]: a for a in json.loads(run("attrs", "list", "--data", data, "--json"))["attributes"]}


# Expressions whose counts must repeat exactly for a seed.
DETERMINISM = [
    "all",
    'gender = "female"',
    "age BETWEEN 25 AND 35",
    'city = "guangzhou"',
    'province = "guangdong"',
    "near(23.1291, 113.2644, 30km)",
    'member_tier = "gold"',
    "points >= 1000",
    "is_member = true",
    'registered >= "2024-01-01"',
    'last_active < "2025-07-01"',
    "tag:interest/parenting",
    "tag:interest/finance/investment/stocks AND age BETWEEN 25 AND 40",
    "tag:interest/games OR tag:interest/electronics/phones",
    'tag:interest/beauty AND NOT gender = "female"',
    "tag:interest/transport/car_brands/luxury/bmw",
    "tag:lifecycle/active",
    "tag:device/ios",
]


def level_of(path):
    """Level counted from the level-1 tags: interest = 0, interest/x = 1."""
    return path.count("/")


def check_taxonomy(data):
    tl = tags(data)
    by = {t["path"]: t for t in tl}
    interest = [t for t in tl if t["path"].startswith("interest/")]
    levels = {}
    for t in interest:
        levels[level_of(t["path"])] = levels.get(level_of(t["path"]), 0) + 1
    check(levels == {1: 18, 2: 124, 3: 256, 4: 313},
          "interest tags per level are %s, expected {1: 18, 2: 124, 3: 256, 4: 313}" % levels)
    check("interest" in by, "root container `interest` exists")
    for t in interest:
        segs = t["path"].split("/")
        check(all(re.fullmatch(r"[a-z0-9_-]+", s) for s in segs), "slug of %s" % t["path"])
        parent = "/".join(segs[:-1])
        check(parent in by, "parent of %s exists" % t["path"])
    cjk = sum(1 for t in interest if re.search(r"[\u4e00-\u9fff]", t.get("name") or ""))
    check(cjk >= 0.9 * len(interest), "%d of %d interest names are Chinese" % (cjk, len(interest)))
    names = {t["path"]: t.get("name") for t in interest}
    check(names.get("interest/finance") == "金融", "interest/finance is 金融")
    check(names.get("interest/finance/loans") == "贷款", "interest/finance/loans is 贷款")
    check(names.get("interest/finance/loans/mortgage") == "房贷", "mortgage is 房贷")
    l1_names = sorted(t.get("name") for t in interest if level_of(t["path"]) == 1)
    expected = sorted(["交通", "新闻资讯", "服饰鞋帽箱包", "教育", "生活服务", "金融", "商业服务",
                       "娱乐休闲", "孕产育儿", "旅游", "房产", "游戏", "餐饮美食", "医疗健康",
                       "体育运动", "美容个护", "家居", "互联网电子产品"])
    check(l1_names == expected, "level-1 names are the 18 seed categories: %s" % l1_names)
    for p in ["lifecycle/new", "lifecycle/active", "lifecycle/dormant", "lifecycle/churned",
              "device/ios", "device/android", "device/harmonyos", "device/pc"]:
        check(p in by, "non-interest tag %s exists" % p)
    return tl


def check_popularity(data, tl):
    l1 = [t for t in tl if t["path"].startswith("interest/") and level_of(t["path"]) == 1]
    shares = {}
    for t in l1:
        n = count(data, "tag:" + t["path"])
        check(n == t["count"], "tags list count of %s (%s) equals count (%d)" % (t["path"], t["count"], n))
        check(n > 0, "level-1 tag %s has members" % t["path"])
        shares[t["path"]] = n / USERS
    big = [p for p, s in shares.items() if 0.30 <= s <= 0.60]
    check(len(big) >= 3, "at least 3 level-1 tags held by 30-60%% of users: %s" % shares)
    check(max(shares.values()) <= 0.75, "no level-1 tag above 75%%: %s" % shares)
    l4 = sorted(t["count"] / USERS for t in tl
                if t["path"].startswith("interest/") and level_of(t["path"]) == 4)
    check(l4[len(l4) // 2] < 0.01, "median level-4 share %.4f below 1%%" % l4[len(l4) // 2])
    check(l4[-1] < 0.15, "largest level-4 share %.4f below 15%%" % l4[-1])
    tail = sum(1 for s in l4 if 0.0001 <= s <= 0.01)
    check(tail >= len(l4) // 2, "%d of %d level-4 tags in the 0.01-1%% tail" % (tail, len(l4)))
    # A tag's members include its descendants': a parent counts at least as
    # many as its largest child.
    by = {t["path"]: t for t in tl}
    for t in tl:
        if "/" in t["path"]:
            parent = by.get(t["path"].rsplit("/", 1)[0])
            if parent:
                check(parent["count"] >= t["count"], "%s >= %s" % (parent["path"], t["path"]))


def check_demographics(data):
    n = count(data, "all")
    check(n == USERS, "all = %d users" % n)
    check(count(data, "age BETWEEN 16 AND 70") == USERS, "every age in 16..70")
    check(count(data, "age < 16 OR age > 70") == 0, "no age outside 16..70")
    check(count(data, "age = 16") > 0 and count(data, "age = 70") > 0, "both ends of the age range occur")
    peak = count(data, "age BETWEEN 25 AND 35")
    check(peak > count(data, "age BETWEEN 16 AND 24"), "25-35 outnumbers 16-24")
    check(peak > count(data, "age BETWEEN 36 AND 46"), "25-35 outnumbers 36-46")
    check(peak > 3 * count(data, "age BETWEEN 56 AND 66"), "25-35 outnumbers 56-66 threefold")
    f = count(data, 'gender = "female"')
    m = count(data, 'gender = "male"')
    check(f + m == USERS, "every user has a gender")
    check(0.49 <= f / USERS <= 0.55, "female share %.3f near 0.52" % (f / USERS))

    a = attrs(data)
    for name, typ in [("age", "int"), ("gender", "enum"), ("city", "enum"), ("province", "enum"),
                      ("loc", "geo"), ("member_tier", "enum"), ("points", "int"),
                      ("registered", "timestamp"), ("is_member", "bool"), ("last_active", "timestamp")]:
        check(name in a and a[name].get("type") == typ, "attribute %s is %s: %s" % (name, typ, a.get(name)))
    check(a.get("city", {}).get("values", 0) >= 300, "300+ cities reached: %s" % a.get("city"))
    check(a.get("province", {}).get("values", 0) >= 31, "31+ provinces reached: %s" % a.get("province"))

    sh = count(data, 'city = "shanghai"')
    check(sh > USERS * 0.02, "shanghai holds over 2%% of users (%d)" % sh)
    check(sh > 5 * count(data, 'city = "lhasa"'), "shanghai is much heavier than lhasa")
    # Shanghai's scatter is 15 km, clamped at 3 sigma: nobody beyond 47 km.
    check(count(data, 'city = "shanghai" AND NOT near(31.2304, 121.4737, 47km)') == 0,
          "Shanghai users lie within 47 km of the centre")
    check(count(data, 'city = "shanghai" AND near(31.2304, 121.4737, 15km)') > sh * 0.25,
          "Shanghai users cluster near the centre")
    check(count(data, 'city = "guangzhou" AND NOT province = "guangdong"') == 0,
          "city and province agree")

    # Loyalty: the tier is a function of the points.
    for tier, lo, hi in [("none", 0, 1999), ("silver", 2000, 5999), ("gold", 6000, 19999)]:
        t = count(data, 'member_tier = "%s"' % tier)
        r = count(data, "points BETWEEN %d AND %d" % (lo, hi))
        check(t == r, "member_tier %s (%d) = points %d..%d (%d)" % (tier, t, lo, hi, r))
    check(count(data, 'member_tier = "platinum"') == count(data, "points >= 20000"), "platinum = points >= 20000")
    check(count(data, 'member_tier != "none" AND is_member = false') == 0, "tiered users are members")
    check(count(data, 'member_tier = "platinum"') > 0, "some platinum members")
    check(count(data, "is_member = false AND points > 0") == 0, "non-members have no points")

    # Registration over 2018-2025; activity after registration.
    check(count(data, 'registered < "2018-01-01"') == 0, "nobody registered before 2018")
    check(count(data, 'registered >= "2026-01-01"') == 0, "nobody registered after 2025")
    for y in range(2018, 2026):
        c = count(data, 'registered >= "%d-01-01" AND registered < "%d-01-01"' % (y, y + 1))
        check(c > 0, "registrations in %d" % y)
    check(count(data, 'last_active >= "2026-01-01"') == 0, "no activity after the demo's now")

    # Lifecycle: exactly one stage each, consistent with the timestamps.
    stages = {s: count(data, "tag:lifecycle/" + s) for s in ["new", "active", "dormant", "churned"]}
    check(sum(stages.values()) == USERS, "lifecycle stages add up to the users: %s" % stages)
    check(count(data, "tag:lifecycle/new AND tag:lifecycle/active") == 0, "stages are exclusive")
    check(stages["new"] == count(data, 'registered > "2025-10-03T00:00:00Z"'),
          "lifecycle/new = registered in the last 90 days")
    check(count(data, 'tag:lifecycle/churned AND last_active >= "2025-07-05"') == 0,
          "churned users were idle over 180 days")
    phones = sum(count(data, "tag:device/" + d) for d in ["ios", "android", "harmonyos"])
    check(phones == USERS, "exactly one phone per user (%d)" % phones)


def check_users(data):
    """A sample of users, as `user show` sees them (direct tags only)."""
    for i in range(1, 41):
        u = json.loads(run("user", "show", "--data", data, "u%d" % i, "--json"))
        direct = u.get("tags") or []
        interest = [t for t in direct if t.startswith("interest/")]
        check(5 <= len(interest) <= 20, "u%d has 5-20 interest tags: %d" % (i, len(interest)))
        for x in interest:
            for y in interest:
                check(x == y or not y.startswith(x + "/"),
                      "u%d: direct tags %s and its descendant %s" % (i, x, y))
        check(sum(t.startswith("lifecycle/") for t in direct) == 1, "u%d has one lifecycle tag" % i)
        phones = [t for t in direct if t.startswith("device/") and t != "device/pc"]
        check(len(phones) == 1, "u%d has one phone: %s" % (i, phones))
        attrs = u.get("attrs") or {}
        for name in ["age", "gender", "city", "province", "loc", "member_tier", "points",
                     "registered", "is_member", "last_active"]:
            check(name in attrs, "u%d has %s" % (i, name))
        if "registered" in attrs and "last_active" in attrs:
            check(str(attrs["last_active"]) >= str(attrs["registered"]),
                  "u%d active after registering: %s" % (i, attrs))


def share(data, expr, within):
    n = count(data, within)
    return count(data, "(%s) AND (%s)" % (expr, within)) / n if n else 0.0


def check_correlations(data):
    young_f = 'gender = "female" AND age BETWEEN 25 AND 38'
    senior = "age >= 58"
    check(share(data, "tag:interest/parenting", young_f) > 2 * share(data, "tag:interest/parenting", senior),
          "young women hold parenting interests more than seniors")
    young_m = 'gender = "male" AND age BETWEEN 16 AND 30'
    young_f2 = 'gender = "female" AND age BETWEEN 16 AND 30'
    check(share(data, "tag:interest/games", young_m) > 1.5 * share(data, "tag:interest/games", young_f2),
          "young men play games more than young women")
    check(share(data, "tag:interest/beauty", 'gender = "female"') >
          3 * share(data, "tag:interest/beauty", 'gender = "male"'), "beauty leans female")
    check(share(data, "tag:interest/health", senior) > share(data, "tag:interest/health", "age < 30"),
          "seniors care more about health")
    # Parents of young children also look at education and home.
    parents = "tag:interest/parenting/baby_food/milk_powder"
    check(share(data, "tag:interest/education", parents) > share(data, "tag:interest/education", "all"),
          "milk-powder buyers over-index on education")


def test():
    tmp = harness.tempdir("cp-demo-test-")
    a, b, c = (os.path.join(tmp, x) for x in "abc")
    demo(a, SEED)
    demo(b, SEED)
    demo(c, SEED + 1)
    same, differ = 0, 0
    for e in DETERMINISM:
        ca, cb, cc = count(a, e), count(b, e), count(c, e)
        check(ca == cb, "same seed, same count for %r: %d vs %d" % (e, ca, cb))
        same += ca == cb
        differ += ca != cc
    check(differ >= len(DETERMINISM) // 2,
          "another seed changes most counts (%d of %d differ)" % (differ, len(DETERMINISM)))
    ta, tb = tags(a), tags(b)
    check([(t["path"], t["count"]) for t in ta] == [(t["path"], t["count"]) for t in tb],
          "same seed, same tag counts for all %d tags" % len(ta))
    tl = check_taxonomy(a)
    check_popularity(a, tl)
    check_demographics(a)
    check_correlations(a)
    check_users(a)
    # The CLI protects existing data: a non-empty directory needs --force.
    p = harness.run("demo", "--data", a, "--users", "10")
    check(p.returncode != 0, "demo refuses a non-empty directory without --force")


if __name__ == "__main__":
    main(test)
