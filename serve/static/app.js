// The chat page: sends the conversation to /v1/chat, shows the answer and every pose as the
// server's PNG, an OBJ download and a BodyViewer of the returned vertices. Everything it loads
// comes from this service (the page's Content-Security-Policy forbids anything else). With an API
// key configured, the browser signs in once at /login: its session cookie then goes with every
// request of the page (fetch and <img> alike), so the page itself never holds the key.
// Editing: "Edit this pose" on an answered pose sends the next message with that pose (by its id,
// as a <POSE_IN> of the turn); the answer then shows the pose before and after, each in a viewer.
"use strict";

(function () {
  const ROOT = document.querySelector('meta[name="api-root"]').content.replace(/\/$/, "");
  const log = document.getElementById("log");
  const form = document.getElementById("composer");
  const message = document.getElementById("message");
  const fileInput = document.getElementById("image");
  const preview = document.getElementById("preview");
  const clearImage = document.getElementById("clear-image");
  const status = document.getElementById("status");
  const sendButton = document.getElementById("send");
  const detectBox = document.getElementById("detect");
  const editing = document.getElementById("editing");
  const editingLabel = document.getElementById("editing-label");

  let editTarget = null; // {pose, label} the next message edits, or null

  let history = []; // [{role, content}] of this conversation
  let image = null; // data URL of the conversation's image (sent with every turn)
  let topology = null; // faces and parts of the body model, fetched once

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // text only: answers are never parsed as HTML
    return node;
  }

  function add(node) {
    log.appendChild(node);
    node.scrollIntoView({ block: "end" });
    return node;
  }

  async function getTopology() {
    if (!topology) {
      const res = await fetch(`${ROOT}/v1/body`);
      if (!res.ok) throw new Error(`body model: HTTP ${res.status}`);
      topology = await res.json();
    }
    return topology;
  }

  function viewerCanvas(pose) {
    const canvas = el("canvas", "body-viewer");
    canvas.width = 256;
    canvas.height = 256;
    canvas.title = "Drag to turn the body";
    if (pose.mesh.vertices) {
      getTopology()
        .then((topo) => new window.BodyViewer(canvas, pose.mesh.vertices, topo))
        .catch((err) => { status.textContent = `Viewer: ${err.message}`; });
    }
    return canvas;
  }

  function chooseEdit(pose, label) {
    editTarget = { pose, label };
    editingLabel.textContent = `Editing ${label}: say what to change, e.g. "Raise the left arm."`;
    editing.hidden = false;
    document.querySelectorAll(".pose.selected").forEach((n) => n.classList.remove("selected"));
    const card = document.querySelector(`.pose[data-pose-id="${CSS.escape(pose.id)}"]`);
    if (card) card.classList.add("selected");
    message.focus();
  }

  function stopEditing() {
    editTarget = null;
    editing.hidden = true;
    document.querySelectorAll(".pose.selected").forEach((n) => n.classList.remove("selected"));
  }

  // The edited pose and the answer's pose side by side, each in its own viewer.
  function compareCard(before, after, index) {
    const card = el("div", "pose compare");
    card.dataset.poseId = after.id;
    card.appendChild(el("h3", null, `Pose ${index + 1}: before and after the edit`));
    const views = el("div", "views");
    [["Before", before, "before"], ["After", after, "after"]].forEach(([title, pose, cls]) => {
      const fig = el("figure", cls);
      fig.appendChild(viewerCanvas(pose));
      fig.appendChild(el("figcaption", null, title));
      views.appendChild(fig);
    });
    card.appendChild(views);
    const edit = el("button", "edit-pose", "Edit this pose");
    edit.type = "button";
    edit.addEventListener("click", () => chooseEdit(after, `pose ${index + 1} (after)`));
    card.appendChild(edit);
    return card;
  }

  function poseCard(pose, index) {
    const card = el("div", "pose");
    card.dataset.poseId = pose.id;
    card.appendChild(el("h3", null, `Pose ${index + 1}`));
    const views = el("div", "views");
    const img = el("img", "body-png");
    img.alt = `Rendered body of pose ${index + 1}`;
    img.src = pose.mesh.png_url;
    views.appendChild(img);
    views.appendChild(viewerCanvas(pose));
    card.appendChild(views);
    const link = el("a", null, "Download OBJ");
    link.href = pose.mesh.obj_url;
    link.download = `pose-${pose.id}.obj`;
    card.appendChild(link);
    const edit = el("button", "edit-pose", "Edit this pose");
    edit.type = "button";
    edit.addEventListener("click", () => chooseEdit(pose, `pose ${index + 1}`));
    card.appendChild(edit);
    img.addEventListener("click", () => chooseEdit(pose, `pose ${index + 1}`));
    return card;
  }

  const BOX_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

  // The sent image with each detected person's box and number drawn over it.
  function peopleCanvas(people, src) {
    const canvas = el("canvas", "people-boxes");
    const picture = new Image();
    picture.onload = () => {
      const scale = Math.min(1, 360 / Math.max(picture.width, picture.height));
      canvas.width = Math.round(picture.width * scale);
      canvas.height = Math.round(picture.height * scale);
      const ctx = canvas.getContext("2d");
      ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
      ctx.lineWidth = 2;
      ctx.font = "bold 14px system-ui, sans-serif";
      people.forEach((person, k) => {
        const [x0, y0, x1, y1] = person.box.map((v) => v * scale);
        ctx.strokeStyle = ctx.fillStyle = BOX_COLORS[k % BOX_COLORS.length];
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
        ctx.fillText(String(k + 1), x0 + 3, y0 + 15);
      });
    };
    picture.src = src;
    return canvas;
  }

  function showPeople(data, node, src) {
    node.appendChild(el("span", "meta", `${data.people.length} ${data.people.length === 1 ? "person" : "people"} found`));
    if (!data.people.length) return;
    const row = el("div", "people");
    row.appendChild(peopleCanvas(data.people, src));
    let first = 0;
    data.people.forEach((person, k) => {
      const card = el("div", "person");
      const title = el("h3", null, `Person ${k + 1} · score ${person.score.toFixed(2)}`);
      title.style.color = BOX_COLORS[k % BOX_COLORS.length];
      card.appendChild(title);
      card.appendChild(el("p", null, person.text.replace(/<POSE>/g, "[pose]")));
      person.poses.forEach((p, i) => card.appendChild(poseCard(p, first + i)));
      first += person.poses.length;
      row.appendChild(card);
    });
    node.appendChild(row);
  }

  function showAnswer(data, src, before) {
    let n = 0;
    const text = data.people ? "" : data.text.replace(/<POSE>/g, () => `[pose ${++n}]`);
    const node = el("div", "msg assistant", text);
    const t = data.timings;
    const detectNote = t.detect_ms != null ? ` · detection ${Math.round(t.detect_ms)} ms` : "";
    node.appendChild(
      el("span", "meta", `${Math.round(t.total_ms)} ms · batch of ${t.batch_size} · ${data.usage.completion_tokens} tokens${detectNote}`)
    );
    if (data.people) {
      showPeople(data, node, src);
    } else if (data.poses.length) {
      const poses = el("div", "poses");
      data.poses.forEach((p, i) => poses.appendChild(before ? compareCard(before, p, i) : poseCard(p, i)));
      node.appendChild(poses);
    }
    add(node);
  }

  function showError(text) {
    add(el("div", "msg error", text));
  }

  async function send(content) {
    const turn = { role: "user", content };
    const before = editTarget ? editTarget.pose : null;
    // By id: the service keeps every pose it answered, for this key, and checks it before any batch.
    if (before) turn.poses = [before.id];
    const body = { messages: [...history, turn], include_vertices: true };
    if (image) body.image = image;
    if (image && detectBox.checked) body.detect = true;
    add(el("div", "msg user", before ? `${content} (editing ${editTarget.label})` : content));
    sendButton.disabled = true;
    status.textContent = "Thinking…";
    try {
      const res = await fetch(`${ROOT}/v1/chat`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (res.status === 401) {
        // The session cookie expired (or the key changed): sign in again, then come back.
        window.location.assign(`${ROOT}/login?next=/`);
        return;
      }
      const data = await res.json().catch(() => null);
      if (!res.ok) {
        const err = data && data.error ? data.error : { message: `HTTP ${res.status}` };
        showError(`${err.message}${data && data.request_id ? ` (request ${data.request_id})` : ""}`);
        return;
      }
      history.push(turn, { role: "assistant", content: data.text });
      stopEditing();
      showAnswer(data, image, before);
    } catch (err) {
      showError(`Request failed: ${err.message}`);
    } finally {
      sendButton.disabled = false;
      status.textContent = "";
    }
  }

  function reset() {
    history = [];
    stopEditing();
    log.replaceChildren();
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const content = message.value.trim();
    if (!content) return;
    message.value = "";
    send(content);
  });

  message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      image = reader.result; // data:image/...;base64,...
      preview.src = image;
      preview.hidden = false;
      clearImage.hidden = false;
      reset(); // the image belongs to the first turn: a new image starts a new conversation
    };
    reader.readAsDataURL(file);
  });

  clearImage.addEventListener("click", () => {
    image = null;
    fileInput.value = "";
    preview.hidden = true;
    clearImage.hidden = true;
    reset();
  });

  document.getElementById("reset").addEventListener("click", reset);
  document.getElementById("stop-editing").addEventListener("click", stopEditing);
})();
