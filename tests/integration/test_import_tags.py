#!/usr/bin/env python3
"""Tags from files: a mapping's "tags" turn an iPinYou-style usertag column
(`10006,10024,10057`) into tag memberships (src/ingest/mapping.c, applied in
src/engine/events.c).

Runs the real binary ($CROWDPACK) on a temporary data directory: creates two
of three dictionary tags, generates a CSV whose usertag cells hold known ids,
an id whose tag is not in the taxonomy, ids no dictionary knows, empty cells
and stray spaces, plus a column of literal tag paths; imports it with a
mapping whose dictionary comes from a dictionary_file next to the mapping;
then checks `crowdpack count 'tag:...'` and the import's tags_unknown
against figures computed here from the rows. Also: a bad "tags" key is
refused naming the key, and `--server` refuses a mapping with tags.
"""
import json
import os
import random

from harness import check, main, run, tempdir


def count(data, expr):
    rc, out, err = run("count", "--data", data, "--json", expr)
    if rc != 0:
        return "error: " + err.strip()
    return json.loads(out)["count"]


def test():
    tmp = tempdir("cp_tags_")
    data = os.path.join(tmp, "d")
    rc, _, err = run("init", "--data", data)
    check(rc == 0, "init", err)
    for t in ("interest/finance", "life/pets", "兴趣/旅游"):
        rc, _, err = run("tags", "create", "--data", data, t)
        check(rc == 0, "tags create " + t, err)

    # The dictionary: 10057 maps to a tag the taxonomy lacks (counted
    # unknown, never created); 99999 and 12345 are in no dictionary.
    dictionary = {"10006": "interest/finance", "10024": "life/pets",
                  "10057": "life/travel", "10077": "兴趣/旅游"}
    os.mkdir(os.path.join(tmp, "maps"))
    with open(os.path.join(tmp, "maps", "ipinyou.json"), "w", encoding="utf-8") as f:
        json.dump(dictionary, f, ensure_ascii=False)
    mapping = {
        "identifiers": [{"column": "uid", "type": "user_id"}],
        "tags": [
            {"column": "usertag", "separator": ",", "dictionary_file": "ipinyou.json",
             "unknown": "skip"},
            {"column": "paths", "separator": "|"},
        ],
    }
    mpath = os.path.join(tmp, "maps", "m.json")
    with open(mpath, "w") as f:
        json.dump(mapping, f)

    rnd = random.Random(10)
    ids = list(dictionary) + ["99999", "12345"]
    members = {path: set() for path in dictionary.values()}
    members["life/pets"] = set()
    unknown = 0
    rows = []
    for i in range(600):
        uid = "u%d" % rnd.randrange(200)
        picked = rnd.sample(ids, rnd.randrange(0, 4))
        for x in picked:
            if x in ("99999", "12345", "10057"):
                unknown += 1
            else:
                members[dictionary[x]].add(uid)
        cell = ",".join((" %s " % x) if rnd.random() < 0.2 else x for x in picked)
        if picked and rnd.random() < 0.1:
            cell += ","  # a trailing separator: an empty piece, ignored
        paths = []
        if rnd.random() < 0.15:
            paths.append("life/pets")
            members["life/pets"].add(uid)
        if rnd.random() < 0.1:
            paths.append("nope/missing")
            unknown += 1
        rows.append('%s,"%s",%s\n' % (uid, cell, "|".join(paths)))
    csvp = os.path.join(tmp, "rows.csv")
    with open(csvp, "w", encoding="utf-8") as f:
        f.write("uid,usertag,paths\n")
        f.writelines(rows)

    rc, out, err = run("import", "--data", data, "--quiet", "--json", "--mapping", mpath, csvp)
    check(rc == 0, "import", err)
    st = json.loads(out) if rc == 0 else {}
    check(st.get("events") == 600, "every row is an event", str(st))
    check(st.get("rejected") == 0, "no row rejected", str(st))
    check(st.get("tags_unknown") == unknown, "unknown tag ids counted",
          "%s, want %d" % (st.get("tags_unknown"), unknown))
    assigned = sum(len(v) for k, v in members.items() if k != "life/travel")
    check(st.get("tags_assigned") == assigned, "memberships added",
          "%s, want %d" % (st.get("tags_assigned"), assigned))
    for path in ("interest/finance", "life/pets", "兴趣/旅游"):
        got = count(data, "tag:" + path)
        check(got == len(members[path]), "count tag:" + path,
              "%s, want %d" % (got, len(members[path])))
    rc, _, err = run("tags", "show", "--data", data, "life/travel")
    check(rc != 0, "a dictionary path missing from the taxonomy is not created", err)

    # The text report says it too.
    rc, out, err = run("import", "--data", data, "--quiet", "--restart", "--mapping", mpath,
                       csvp)
    check(rc == 0 and "unknown tag ids %d" % unknown in out, "text report", out + err)

    # A bad key is refused, naming it.
    bad = dict(mapping)
    bad["tags"] = [{"column": "usertag", "dict": {}}]
    bpath = os.path.join(tmp, "maps", "bad.json")
    with open(bpath, "w") as f:
        json.dump(bad, f)
    rc, out, err = run("import", "--data", data, "--quiet", "--restart", "--mapping", bpath,
                       csvp)
    check(rc != 0 and "tags[0]" in err and "dict" in err, "bad tags key named", err)
    bad["tags"] = [{"column": "usertag", "dictionary_file": "absent.json"}]
    with open(bpath, "w") as f:
        json.dump(bad, f)
    rc, out, err = run("import", "--data", data, "--quiet", "--restart", "--mapping", bpath,
                       csvp)
    check(rc != 0 and "dictionary_file" in err and "absent.json" in err,
          "missing dictionary file named", err)
    # --server would drop the tags (rows travel as Segment events): refused.
    rc, out, err = run("import", "--server", "http://127.0.0.1:9", "--quiet", "--mapping",
                       mpath, csvp, timeout=30)
    check(rc != 0 and "tags" in err, "--server refuses a mapping with tags", err)


if __name__ == "__main__":
    main(test)
