/*
 * <errands-task task-id="…" api="/api" poll="1" csrf="…">: a live view of one errands task.
 *
 * It follows the task over Server-Sent Events ({api}/tasks/{id}/events) and falls back
 * to polling ({api}/tasks/{id} with If-None-Match, {api}/tasks/{id}/output?after=N) when
 * the stream keeps failing. It renders into its own light DOM, so the page's CSS
 * applies, and tells the page what happens through bubbling DOM events:
 * errands:update (the task resource), errands:output ({seq, data}), errands:attempt
 * ({attempt, output_floor}: a new attempt began, drop the items received so far) and
 * errands:done.
 *
 * A classic script that also loads as a module; no dependencies. How to use it:
 * docs/errands-task.md.
 */
(() => {
  "use strict";

  if (typeof customElements === "undefined" || customElements.get("errands-task")) {
    return;
  }

  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  /** Answers after which there is nothing to follow: no identity, no such task. */
  const LOST = new Set([401, 403, 404, 410]);
  /** The largest page GET …/output returns. */
  const OUTPUT_PAGE = 1000;
  /** Errors of the stream, without any event in between, before polling instead. */
  const STREAM_ERRORS = 3;
  const MAX_POLL_DELAY_MS = 30000;

  function formatPercent(percent) {
    return typeof percent === "number" && Number.isFinite(percent)
      ? `${Math.round(percent)}%`
      : "";
  }

  function formatEta(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) {
      return "";
    }
    const s = Math.max(1, Math.round(seconds));
    return s < 60 ? `about ${s} s left` : `about ${Math.round(s / 60)} min left`;
  }

  function pretty(value) {
    const text = JSON.stringify(value === undefined ? null : value, null, 2);
    return text === undefined ? String(value) : text;
  }

  function make(tag, className, attrs = {}) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  function kept(node) {
    return (
      node.nodeType === Node.ELEMENT_NODE &&
      (node.matches("[data-errands-keep], [data-errands-result]") ||
        node.querySelector("[data-errands-keep], [data-errands-result]") !== null)
    );
  }

  /** The text of an error answer: a problem+json document's detail or title. */
  async function problemText(response) {
    let text = "";
    try {
      const doc = await response.json();
      if (doc && typeof doc === "object") text = doc.detail || doc.title || "";
    } catch {
      /* not JSON */
    }
    return text ? `${text} (HTTP ${response.status})` : `HTTP ${response.status}`;
  }

  class ErrandsTask extends HTMLElement {
    static observedAttributes = ["task-id", "api"];

    // What the element knows of its task (kept while it is moved in the document).
    #key = null; // `${api} ${taskId}` the state below belongs to
    #resource = null;
    #version = -1;
    #etag = null;
    #lastSeq = 0;
    #floor = 0; // the output floor of the attempt the items dispatched belong to
    #done = false;
    #notice = ""; // a failed cancel, a task that is gone
    #lost = false;
    #cancelling = false;
    #seed = {}; // what server-rendered markup showed, until the first resource

    // The connection.
    #mode = null;
    #generation = 0; // bumped by #stop: late answers of an older connection are dropped
    #source = null;
    #streamErrors = 0;
    #timer = 0;
    #pollFailures = 0;
    #aborter = null;
    #view = null;

    /** "sse" or "poll": how the element follows its task (null before it starts). */
    get mode() {
      return this.#mode;
    }

    /** The newest task resource received (null before the first). */
    get resource() {
      return this.#resource;
    }

    /** The highest output sequence number dispatched (or the current attempt's floor). */
    get lastSeq() {
      return this.#lastSeq;
    }

    /** The current attempt's output floor: its items have a `seq` above it. */
    get outputFloor() {
      return this.#floor;
    }

    get taskId() {
      return (this.getAttribute("task-id") || "").trim();
    }

    get api() {
      const api = this.getAttribute("api");
      return (api === null || api.trim() === "" ? "/api" : api.trim()).replace(/\/+$/, "");
    }

    connectedCallback() {
      if (document.readyState === "loading") {
        // A classic script in <head>: wait for the server-rendered children.
        document.addEventListener("DOMContentLoaded", () => this.isConnected && this.#start(), {
          once: true,
        });
        return;
      }
      this.#start();
    }

    disconnectedCallback() {
      this.#stop();
    }

    attributeChangedCallback(name, before, after) {
      if (before !== after && this.isConnected && this.#view !== null) this.#start();
    }

    // -- lifecycle --------------------------------------------------------------------
    #start() {
      this.#stop();
      this.#ensureView();
      const key = `${this.api} ${this.taskId}`;
      if (this.#key !== null && this.#key !== key) this.#forget();
      this.#key = key;
      this.#render();
      if (!this.taskId || this.#done || this.#lost) return;
      this.#aborter = new AbortController();
      this.#connect();
    }

    #stop() {
      this.#generation += 1;
      if (this.#source !== null) {
        this.#source.close();
        this.#source = null;
      }
      clearTimeout(this.#timer);
      this.#timer = 0;
      if (this.#aborter !== null) {
        this.#aborter.abort();
        this.#aborter = null;
      }
    }

    /** Another task: drop everything known of the previous one. */
    #forget() {
      this.#resource = null;
      this.#version = -1;
      this.#etag = null;
      this.#lastSeq = 0;
      this.#floor = 0;
      this.#done = false;
      this.#notice = "";
      this.#lost = false;
      this.#cancelling = false;
      this.#seed = {};
      const slot = this.querySelector("[data-errands-result]");
      if (slot !== null) slot.textContent = "";
    }

    #setMode(mode) {
      this.#mode = mode;
      this.setAttribute("data-mode", mode);
    }

    #base() {
      return `${this.api}/tasks/${encodeURIComponent(this.taskId)}`;
    }

    #pollDelay() {
      const seconds = Number.parseFloat(this.getAttribute("poll") ?? "");
      return (Number.isFinite(seconds) && seconds > 0 ? Math.max(seconds, 0.1) : 1) * 1000;
    }

    #csrf() {
      const own = this.getAttribute("csrf");
      if (own) return own;
      const meta = document.querySelector('meta[name="csrf-token"]');
      return meta ? meta.getAttribute("content") || "" : "";
    }

    #fetch(url, init = {}) {
      return fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        signal: this.#aborter ? this.#aborter.signal : undefined,
        ...init,
        headers: { Accept: "application/json", ...(init.headers || {}) },
      });
    }

    #emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
    }

    // -- Server-Sent Events -------------------------------------------------------------
    #connect() {
      if (typeof EventSource !== "function") {
        this.#startPolling();
        return;
      }
      const generation = this.#generation;
      let url = `${this.#base()}/events`;
      if (this.#version >= 0 || this.#lastSeq > 0) {
        // Moved in the document, or back from polling: resume where we are (from an
        // earlier attempt, the stream starts with an `attempt` event).
        url += `?last_event_id=${Math.max(this.#version, 0)}-${this.#lastSeq}`;
      }
      let source;
      try {
        source = new EventSource(url);
      } catch {
        this.#startPolling();
        return;
      }
      this.#source = source;
      this.#streamErrors = 0;
      this.#setMode("sse");

      const listen = (type, handle) =>
        source.addEventListener(type, (event) => {
          if (generation !== this.#generation) return;
          this.#streamErrors = 0;
          let data;
          try {
            data = JSON.parse(event.data);
          } catch {
            return;
          }
          handle(data);
        });
      listen("output", (item) => this.#output(item));
      listen("attempt", (doc) => this.#floorAt(doc.output_floor, doc.attempt));
      listen("status", (doc) => this.#take(doc));
      listen("progress", (doc) => this.#take(doc));
      listen("done", (doc) => this.#take(doc)); // after every output: nothing is left
      listen("deleted", () => this.#lose("This task was deleted."));
      let opened = false;
      source.addEventListener("open", () => {
        opened = true;
      });
      source.addEventListener("error", () => {
        if (generation !== this.#generation) return;
        this.#streamErrors += 1;
        // A stream that never opened (blocked by a proxy, refused) is not retried.
        if (
          !opened ||
          source.readyState === EventSource.CLOSED ||
          this.#streamErrors >= STREAM_ERRORS
        ) {
          this.#startPolling();
        } else if (this.#streamErrors === 1) {
          // EventSource reconnects by itself; meanwhile show the task as it is now.
          this.#refresh(generation);
        }
      });
    }

    // -- polling ------------------------------------------------------------------------
    #startPolling() {
      if (this.#source !== null) {
        this.#source.close();
        this.#source = null;
      }
      this.#setMode("poll");
      clearTimeout(this.#timer);
      const generation = this.#generation;
      this.#timer = setTimeout(() => this.#tick(generation), 0);
    }

    async #tick(generation) {
      this.#timer = 0;
      let delay = this.#pollDelay();
      try {
        const headers = this.#etag ? { "If-None-Match": this.#etag } : {};
        const response = await this.#fetch(this.#base(), { headers });
        if (generation !== this.#generation) return;
        let doc = null;
        if (response.status === 200) {
          doc = await response.json();
        } else if (response.status !== 304) {
          if (LOST.has(response.status)) {
            this.#lose(`This task cannot be followed: ${await problemText(response)}`);
            return;
          }
          throw new Error(`HTTP ${response.status}`);
        }
        // A new attempt before its outputs, and those before the resource (a finished
        // task's come before its end).
        if (doc !== null) this.#newer(doc);
        await this.#drain(generation);
        if (generation !== this.#generation) return;
        if (doc !== null) this.#take(doc, response.headers.get("ETag"));
        this.#pollFailures = 0;
      } catch (error) {
        if (generation !== this.#generation) return;
        this.#pollFailures += 1;
        delay = Math.min(delay * 2 ** Math.min(this.#pollFailures, 5), MAX_POLL_DELAY_MS);
      }
      if (generation === this.#generation && !this.#done) {
        this.#timer = setTimeout(() => this.#tick(generation), delay);
      }
    }

    /** One read of the task and its new outputs while the stream reconnects. */
    async #refresh(generation) {
      try {
        const headers = this.#etag ? { "If-None-Match": this.#etag } : {};
        const response = await this.#fetch(this.#base(), { headers });
        if (generation !== this.#generation || response.status !== 200) return;
        const doc = await response.json();
        if (generation !== this.#generation) return;
        this.#newer(doc);
        await this.#drain(generation); // the stream's repeats of these are dropped by seq
        if (generation !== this.#generation) return;
        this.#take(doc, response.headers.get("ETag"));
      } catch {
        /* the stream or the next poll will tell */
      }
    }

    /** Fetch and dispatch every output after the highest seen. */
    async #drain(generation) {
      for (;;) {
        const url = `${this.#base()}/output?after=${this.#lastSeq}&limit=${OUTPUT_PAGE}`;
        const response = await this.#fetch(url);
        if (generation !== this.#generation || !response.ok) return;
        const page = await response.json();
        if (generation !== this.#generation) return;
        const items = page && Array.isArray(page.items) ? page.items : [];
        if (page) this.#floorAt(page.output_floor, null);
        const before = this.#lastSeq;
        for (const item of items) this.#output(item);
        if (items.length < OUTPUT_PAGE || this.#lastSeq === before) return;
      }
    }

    // -- what arrives ---------------------------------------------------------------------
    #output(item) {
      if (!item || typeof item.seq !== "number" || item.seq <= this.#lastSeq) return;
      this.#lastSeq = item.seq;
      this.#emit("errands:output", { seq: item.seq, data: item.data });
    }

    /**
     * The task's output floor is `floor`. Higher than the one known, and at or above
     * every item dispatched, it means a new attempt began: the items dispatched so far
     * belong to an earlier one. The element goes on from the floor and tells the page
     * (errands:attempt) to drop them. An element that has received nothing yet starts
     * at the floor without a word, as the stream does for a new client; one holding
     * items above the floor learns the floor of their attempt.
     */
    #floorAt(floor, attempt) {
      if (this.#done || typeof floor !== "number" || floor <= this.#floor) return;
      this.#floor = floor;
      if (floor < this.#lastSeq) return;
      const fresh = this.#version < 0 && this.#lastSeq === 0;
      this.#lastSeq = floor;
      if (fresh) return;
      this.#emit("errands:attempt", {
        attempt: typeof attempt === "number" ? attempt : null,
        output_floor: floor,
      });
    }

    /** A new attempt that `doc` (a task resource) tells of, if it is news. */
    #newer(doc) {
      if (doc && typeof doc === "object" && !(doc.version <= this.#version)) {
        this.#floorAt(doc.output_floor, doc.attempts);
      }
    }

    /** Show a task resource newer than the one shown; true if it was. */
    #take(doc, etag = null) {
      if (this.#done || !doc || typeof doc !== "object") return false;
      if (typeof doc.version === "number") {
        if (doc.version <= this.#version) {
          if (etag && doc.version === this.#version) this.#etag = etag;
          return false;
        }
        this.#newer(doc);
        this.#version = doc.version;
        this.#etag = etag || `"${doc.version}"`; // the API's ETag is the version
      }
      this.#resource = doc;
      if (doc.done) {
        this.#done = true;
        this.#stop();
      }
      this.#render();
      this.#emit("errands:update", doc);
      if (doc.done) this.#emit("errands:done", doc);
      return true;
    }

    /** The task cannot be followed any more (deleted, not found, signed out). */
    #lose(text) {
      this.#lost = true;
      this.#notice = text;
      this.#stop();
      this.#render();
    }

    // -- cancel -------------------------------------------------------------------------
    async #cancel() {
      if (this.#cancelling || this.#done || this.#lost || !this.taskId) return;
      const key = this.#key;
      this.#cancelling = true;
      this.#notice = "";
      this.#render();
      let response = null;
      try {
        const headers = { Accept: "application/json" };
        const token = this.#csrf();
        if (token) headers["X-CSRF-Token"] = token;
        response = await fetch(`${this.#base()}/cancel`, {
          method: "POST",
          headers,
          credentials: "same-origin",
          cache: "no-store",
        });
        if (key !== this.#key) return;
        if (response.status !== 200 && response.status !== 202) {
          this.#notice = `Could not cancel: ${await problemText(response)}`;
          return;
        }
        const doc = await response.json();
        if (key !== this.#key) return;
        if (doc && doc.done && !this.#done) {
          // Finished (a queued task is cancelled at once): its outputs come first.
          await this.#drain(this.#generation).catch(() => {});
        }
        if (key === this.#key) this.#take(doc, response.headers.get("ETag"));
      } catch {
        if (key === this.#key && response === null) {
          this.#notice = "Could not cancel: the server did not answer.";
        }
      } finally {
        if (key === this.#key) {
          this.#cancelling = false;
          this.#render();
        }
      }
    }

    // -- the view ---------------------------------------------------------------------------
    #ensureView() {
      if (this.#view !== null && this.#view.root.parentNode === this) return;
      if (this.#view === null) {
        // What the server rendered for readers without JavaScript, until news arrives.
        const status = this.querySelector(".et-status");
        const bar = this.querySelector("progress.et-bar[value]");
        const message = this.querySelector(".et-message");
        const eta = this.querySelector(".et-eta");
        this.#seed = {
          status: status ? (status.getAttribute("data-status") || status.textContent).trim() : "",
          percent: bar ? Number(bar.getAttribute("value")) : null,
          message: message ? message.textContent.trim() : "",
          eta: eta ? eta.textContent.trim() : "",
        };
      }
      for (const node of Array.from(this.childNodes)) {
        if (!kept(node)) node.remove();
      }

      const root = make("div", "et-view");
      const head = make("div", "et-head");
      const status = make("span", "et-status", { role: "status", "aria-live": "polite" });
      const cancel = make("button", "et-cancel", { type: "button" });
      cancel.textContent = "Cancel";
      cancel.addEventListener("click", () => this.#cancel());
      head.append(status, cancel);

      const line = make("div", "et-progress");
      const bar = make("progress", "et-bar", { max: "100", "aria-label": "Task progress" });
      const percent = make("span", "et-percent");
      const eta = make("span", "et-eta");
      line.append(bar, percent, eta);

      const message = make("p", "et-message");
      const error = make("p", "et-error", { role: "alert" });
      error.hidden = true;
      root.append(head, line, message, error);

      let result = null;
      if (this.querySelector("[data-errands-result]") === null) {
        result = make("pre", "et-result");
        result.hidden = true;
        root.append(result);
      }
      this.prepend(root);
      this.#view = { root, status, cancel, bar, percent, eta, message, error, result };
    }

    #render() {
      const view = this.#view;
      if (view === null) return;
      const doc = this.#resource;
      const seed = this.#seed;
      const status = doc ? String(doc.status) : seed.status || "";
      const done = doc ? Boolean(doc.done) : FINISHED.has(status);
      const progress = (doc && doc.progress) || {};

      view.status.textContent = status || "…";
      view.status.setAttribute("data-status", status || "unknown");

      let percent = typeof progress.percent === "number" ? progress.percent : null;
      if (!doc && Number.isFinite(seed.percent)) percent = seed.percent;
      if (percent !== null) {
        view.bar.value = Math.max(0, Math.min(100, percent));
      } else if (done) {
        view.bar.value = status === "succeeded" ? 100 : 0; // no spinner on a finished task
      } else {
        view.bar.removeAttribute("value"); // indeterminate
      }
      view.percent.textContent = formatPercent(percent);
      view.eta.textContent = done ? "" : doc ? formatEta(progress.eta_seconds) : seed.eta || "";
      view.message.textContent = doc ? progress.message || "" : seed.message || "";

      const asked = Boolean(doc && doc.cancel_requested) && !done;
      view.cancel.hidden = done || this.#lost;
      view.cancel.disabled = this.#cancelling || asked || !this.taskId;
      view.cancel.textContent = asked ? "Cancelling…" : "Cancel";
      view.cancel.setAttribute("aria-busy", String(this.#cancelling));

      // The error's message is meant for the task's owner; its type (an exception's
      // class name) is for administrators, kept in data-error-type.
      const error = doc && doc.error;
      const text = error ? String(error.message || "The task failed.") : this.#notice;
      view.error.textContent = text;
      view.error.hidden = !text;
      if (error && error.type) view.error.setAttribute("data-error-type", String(error.type));
      else view.error.removeAttribute("data-error-type");

      const slot = this.querySelector("[data-errands-result]");
      const succeeded = Boolean(doc && doc.status === "succeeded" && "result" in doc);
      if (succeeded) {
        const target = slot || view.result;
        if (target) {
          target.textContent = pretty(doc.result);
          target.hidden = false;
        }
      }
      if (view.result && (slot || !succeeded)) view.result.hidden = true;
    }
  }

  customElements.define("errands-task", ErrandsTask);
  globalThis.ErrandsTask = ErrandsTask;
})();
