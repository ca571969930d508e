"""The web page at `/` in a real browser (Debian's chromium + chromedriver through Selenium): it asks for the
key, scores under two policies, and every number it shows equals the API's own for the same request; it reads
a `score` output file and lists items by |log-ratio|. PAGE_SCREENSHOT=path saves a screenshot (docs/page.png)."""

import json
import os
import shutil

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import API_KEY, AUTH, FIREWORKS_ID

PROMPT = "The capital of France is"
RESPONSE = " Paris. It is known for the Eiffel Tower\nand for fine food."
# Two policies on the same model (SmolLM2) at temperatures 1 and 0.7: same tokens, different numbers.
BASE, OTHER = "smol", FIREWORKS_ID


def _binary(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install -y chromium chromium-driver")
    return path


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.binary_location = _binary("chromium")
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=120):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def api_item(server, **body):
    """The API's own answer for what the page sends (echo, five alternatives)."""
    r = requests.post(server + "/v1/logprobs", json={"echo": True, "top_logprobs": 5, "score_end_of_turn": False,
                                                     **body}, headers=AUTH, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["data"][0]


def api_scores(server, model):
    return api_item(server, model=model, prompt=PROMPT, response=RESPONSE)


def open_with_key(driver, server):
    """Loads the page without a key (it says so), then enters the key as a user does."""
    driver.get(server + "/")
    driver.execute_script("sessionStorage.clear(); localStorage.clear();")
    driver.get(server + "/")
    status = wait_for(driver, lambda d: d.find_element(By.ID, "status").text)
    assert "API key" in status, status
    key = driver.find_element(By.ID, "api-key")
    key.clear()
    key.send_keys(API_KEY)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "policies").get_attribute("data-loaded") == "true")
    assert driver.find_element(By.ID, "status").text == ""


def choose(driver, policies, base):
    """Ticks exactly `policies` and selects `base`."""
    for box in driver.find_elements(By.CSS_SELECTOR, "#policies input[type=checkbox]"):
        if box.is_selected() != (box.get_attribute("value") in policies):
            box.click()
    Select(driver.find_element(By.ID, "base")).select_by_value(base)


def test_page_scores_and_shows_the_apis_numbers(browser, server):
    d = browser
    open_with_key(d, server)
    choose(d, [BASE, OTHER], BASE)
    d.find_element(By.ID, "prompt").send_keys(PROMPT)
    d.find_element(By.ID, "response").send_keys(RESPONSE)
    d.find_element(By.ID, "score").click()
    wait_for(d, lambda d: d.find_element(By.ID, "cards").get_attribute("data-scored") == "true")

    api = {p: api_scores(server, p) for p in (BASE, OTHER)}
    cards = {c.get_attribute("data-policy-card"): c for c in d.find_elements(By.CSS_SELECTOR, "[data-policy-card]")}
    assert set(cards) == {BASE, OTHER}
    for policy, card in cards.items():
        a = api[policy]
        assert float(card.get_attribute("data-total-sampling-logprob")) == a["sampling_logprob"]
        assert float(card.get_attribute("data-total-logprob")) == a["logprob"]
        shown_total = card.find_element(By.CSS_SELECTOR, "dd.total").text
        assert float(shown_total.replace("−", "-")) == pytest.approx(a["sampling_logprob"], abs=5e-4)
        tokens = card.find_elements(By.CSS_SELECTOR, ".tok")
        content = a["logprobs"]["content"]
        assert len(tokens) == len(content)
        for t, c in zip(tokens, content):
            assert int(t.get_attribute("data-token-id")) == c["token_id"]
            value = t.get_attribute("data-sampling-logprob")
            assert (None if value is None else float(value)) == c["sampling_logprob"]
        kinds = [t.get_attribute("data-kind") for t in tokens]
        assert kinds == ["prompt"] * a["prompt_tokens"] + ["response"] * a["response_tokens"]
        # The boundary marker sits between the last prompt token and the first response token.
        boundary = card.find_element(By.CSS_SELECTOR, "[data-boundary]")
        before = d.execute_script("return arguments[0].previousElementSibling.dataset.kind", boundary)
        after = d.execute_script("return arguments[0].nextElementSibling.dataset.kind", boundary)
        assert (before, after) == ("prompt", "response")

    # Log-ratios against the base: the sum's difference, and per token where the tokens align (they do).
    other = cards[OTHER]
    expected = api[OTHER]["sampling_logprob"] - api[BASE]["sampling_logprob"]
    assert float(other.get_attribute("data-log-ratio")) == expected
    mine = [c for c in api[OTHER]["logprobs"]["content"][api[OTHER]["prompt_tokens"]:]]
    theirs = [c for c in api[BASE]["logprobs"]["content"][api[BASE]["prompt_tokens"]:]]
    shown = [float(t.get_attribute("data-log-ratio"))
             for t in other.find_elements(By.CSS_SELECTOR, ".tok[data-kind=response]")]
    assert shown == [m["sampling_logprob"] - b["sampling_logprob"] for m, b in zip(mine, theirs)]
    assert cards[BASE].get_attribute("data-log-ratio") is None

    # Hovering a response token shows its id, bytes, value and top alternatives.
    token = cards[BASE].find_elements(By.CSS_SELECTOR, ".tok[data-kind=response]")[3]
    ActionChains(d).move_to_element(token).perform()
    tip = wait_for(d, lambda d: d.find_element(By.ID, "tooltip") if d.find_element(By.ID, "tooltip").is_displayed()
                   else None, timeout=5)
    entry = theirs[3]
    assert str(entry["token_id"]) in tip.text
    assert " ".join(f"{b:02x}" for b in entry["bytes"]) in tip.text
    assert len(tip.find_elements(By.CSS_SELECTOR, ".tip-top tr")) == 1 + len(entry["top_logprobs"])
    if os.environ.get("PAGE_SCREENSHOT"):
        d.save_screenshot(os.environ["PAGE_SCREENSHOT"])

    # The log-ratio view colours the other policy's response tokens and leaves the base's plain.
    d.find_element(By.CSS_SELECTOR, "input[name=view][value=ratio]").click()
    other = d.find_element(By.CSS_SELECTOR, f"[data-policy-card='{OTHER}']")
    assert not other.find_elements(By.CSS_SELECTOR, ".tok[data-kind=response].plain")
    base_card = d.find_element(By.CSS_SELECTOR, f"[data-policy-card='{BASE}']")
    assert all("plain" in t.get_attribute("class") for t in base_card.find_elements(By.CSS_SELECTOR, ".tok"))


def scored_cards(driver, previous=None):
    """Waits for a new set of cards (after `previous` went stale) and returns them by policy; fails with the
    page's message if it shows an error."""
    def ready(d):
        status = d.find_element(By.ID, "status")
        assert status.get_attribute("data-state") != "error", status.text
        return (d.find_element(By.ID, "cards").get_attribute("data-scored") == "true"
                and d.find_elements(By.CSS_SELECTOR, "[data-policy-card]")
                and (previous is None or d.find_element(By.CSS_SELECTOR, "[data-policy-card]") != previous))
    wait_for(driver, ready)
    return {c.get_attribute("data-policy-card"): c for c in driver.find_elements(By.CSS_SELECTOR, "[data-policy-card]")}


def test_chat_messages_and_policies_whose_tokens_differ(browser, server):
    d = browser
    open_with_key(d, server)
    messages = [{"role": "user", "content": "Name the capital of France."}]
    answer = "Paris is the capital of France."
    choose(d, [BASE, OTHER], BASE)
    d.find_element(By.CSS_SELECTOR, "input[name=prompt-mode][value=chat]").click()
    d.find_element(By.CSS_SELECTOR, "#messages .content").send_keys(messages[0]["content"])
    d.find_element(By.ID, "response").send_keys(answer)
    d.find_element(By.ID, "score").click()
    cards = scored_cards(d)
    for p in (BASE, OTHER):
        a = api_item(server, model=p, messages=messages, response=answer)
        assert float(cards[p].get_attribute("data-total-sampling-logprob")) == a["sampling_logprob"]
        assert [int(t.get_attribute("data-token-id")) for t in cards[p].find_elements(By.CSS_SELECTOR, ".tok")] == \
            [c["token_id"] for c in a["logprobs"]["content"]]

    # Policies on different tokenizers (SmolLM2, Gemma 3): only the sums compare, and the card says so.
    d.find_element(By.CSS_SELECTOR, "input[name=prompt-mode][value=text]").click()
    d.find_element(By.ID, "prompt").send_keys(PROMPT)
    choose(d, [BASE, "gemma"], BASE)
    d.find_element(By.ID, "score").click()
    cards = scored_cards(d, previous=cards[BASE])
    api = {p: api_item(server, model=p, prompt=PROMPT, response=answer) for p in (BASE, "gemma")}
    assert float(cards["gemma"].get_attribute("data-log-ratio")) == \
        api["gemma"]["sampling_logprob"] - api[BASE]["sampling_logprob"]
    assert not cards["gemma"].find_elements(By.CSS_SELECTOR, ".tok[data-log-ratio]")
    d.find_element(By.CSS_SELECTOR, "input[name=view][value=ratio]").click()
    notice = d.find_element(By.CSS_SELECTOR, "[data-policy-card='gemma'] .notice")
    assert "only the sums are comparable" in notice.text
    d.find_element(By.CSS_SELECTOR, "input[name=view][value=logprob]").click()


def test_page_lists_a_score_file_by_absolute_log_ratio(browser, server, tmp_path):
    d = browser
    open_with_key(d, server)
    # A `score` output file: ids as strings and numbers, an error line, an id without the base.
    totals = {"a": (-10.0, -12.5), 7: (-3.0, -2.0), "c": (-20.0, -11.0), "d": (-5.0, -5.25)}
    lines = []
    for item_id, (base, other) in totals.items():
        lines.append({"id": item_id, "policy": BASE, "logprob": base, "sampling_logprob": base,
                      "temperature": 1.0, "prompt_tokens": 3, "response_tokens": 2, "cached": False,
                      "token_ids": [11, 12], "token_logprobs": [base / 2, base / 2]})
        lines.append({"id": item_id, "policy": OTHER, "logprob": other, "sampling_logprob": other,
                      "temperature": 0.7, "prompt_tokens": 3, "response_tokens": 2, "cached": False,
                      "token_ids": [11, 12], "token_logprobs": [other / 2, other / 2]})
    lines.append({"id": "e", "policy": OTHER, "error": {"message": "too long"}})
    lines.append({"id": "lonely", "policy": OTHER, "logprob": -1.0, "sampling_logprob": -1.0})
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    d.find_element(By.ID, "score-file").send_keys(str(path))
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#file-table tbody tr[data-item-id]"))
    rows = d.find_elements(By.CSS_SELECTOR, "#file-table tbody tr[data-item-id]")
    listed = [(json.loads(r.get_attribute("data-item-id")), float(r.get_attribute("data-log-ratio"))) for r in rows]
    assert listed == [("c", 9.0), ("a", -2.5), (7, 1.0), ("d", -0.25)]
    assert all(r.get_attribute("data-policy") == OTHER for r in rows)
    # Clicking one inspects it from the file's token detail.
    rows[0].click()
    card = wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-policy-card='{OTHER}']"), timeout=10)[0]
    assert float(card.get_attribute("data-log-ratio")) == 9.0
    assert [float(t.get_attribute("data-log-ratio")) for t in card.find_elements(By.CSS_SELECTOR, ".tok")] == [4.5, 4.5]

    # With the input file open too, clicking an item re-scores it through the API.
    inputs = tmp_path / "items.jsonl"
    inputs.write_text(json.dumps({"id": 7, "prompt": PROMPT, "response": RESPONSE}) + "\n")
    d.find_element(By.ID, "input-file").send_keys(str(inputs))
    wait_for(d, lambda d: "1 items" in d.find_element(By.ID, "status").text, timeout=10)
    d.find_element(By.CSS_SELECTOR, "#file-table tr[data-item-id='7']").click()
    cards = scored_cards(d, previous=card)
    assert list(cards) == [BASE, OTHER]
    for policy, c in cards.items():
        assert float(c.get_attribute("data-total-sampling-logprob")) == api_scores(server, policy)["sampling_logprob"]


def test_foreign_origin_is_refused_but_the_page_itself_works(server):
    r = requests.get(server + "/v1/models", headers={**AUTH, "Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 403
    assert "https://evil.example" in r.json()["error"]["message"]
    r = requests.get(server + "/v1/models", headers={**AUTH, "Origin": server}, timeout=10)
    assert r.status_code == 200
