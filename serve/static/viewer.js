// A small mesh viewer on a 2D canvas: orthographic projection, painter's algorithm, Lambert shading.
// Vertices come in the camera frame of the server (x right, y down, z forward, metres), which maps
// straight onto canvas pixels (y down). Drag to turn the body (yaw), drag vertically to tilt it (pitch).
"use strict";

(function () {
  const BACKGROUND = "#eef1f5";
  const LIGHT = normalize([-0.35, -0.55, -0.75]); // towards the light: up-left, towards the viewer

  function normalize(v) {
    const n = Math.hypot(v[0], v[1], v[2]) || 1;
    return [v[0] / n, v[1] / n, v[2] / n];
  }

  // Per face: the body part most of its three vertices belong to (ties: the first vertex's part).
  function faceParts(faces, parts) {
    const out = new Uint8Array(faces.length / 3);
    for (let f = 0; f < out.length; f++) {
      const a = parts[faces[3 * f]], b = parts[faces[3 * f + 1]], c = parts[faces[3 * f + 2]];
      out[f] = b === c ? b : a;
    }
    return out;
  }

  class BodyViewer {
    // vertices: [[x, y, z], ...]; topology: {faces: [[a, b, c], ...], parts: [...], part_colors: [[r, g, b], ...]}
    constructor(canvas, vertices, topology) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      const n = vertices.length;
      this.n = n;
      this.src = new Float32Array(3 * n);
      const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
      vertices.forEach((v, i) => {
        for (let k = 0; k < 3; k++) {
          this.src[3 * i + k] = v[k];
          lo[k] = Math.min(lo[k], v[k]);
          hi[k] = Math.max(hi[k], v[k]);
        }
      });
      // Centre on the bounding box; the bounding sphere fits the canvas at any angle.
      let radius = 0;
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < 3; k++) this.src[3 * i + k] -= (lo[k] + hi[k]) / 2;
        radius = Math.max(radius, Math.hypot(this.src[3 * i], this.src[3 * i + 1], this.src[3 * i + 2]));
      }
      this.radius = radius || 1;
      this.faces = Uint32Array.from(topology.faces.flat());
      this.nFaces = this.faces.length / 3;
      this.colors = topology.part_colors;
      this.faceParts = faceParts(this.faces, topology.parts);
      this.rot = new Float32Array(3 * n);
      this.depth = new Float32Array(this.nFaces);
      this.order = new Uint32Array(this.nFaces);
      this.yaw = 0;
      this.pitch = 0;
      this.pending = false;
      this._bindDrag();
      this.draw();
    }

    _bindDrag() {
      let last = null;
      this.canvas.addEventListener("pointerdown", (e) => {
        last = [e.clientX, e.clientY];
        this.canvas.setPointerCapture(e.pointerId);
      });
      this.canvas.addEventListener("pointermove", (e) => {
        if (!last) return;
        this.turn((e.clientX - last[0]) * 0.01, (e.clientY - last[1]) * 0.01);
        last = [e.clientX, e.clientY];
      });
      const stop = () => { last = null; };
      this.canvas.addEventListener("pointerup", stop);
      this.canvas.addEventListener("pointercancel", stop);
    }

    turn(dYaw, dPitch) {
      this.yaw += dYaw;
      this.pitch = Math.max(-1.5, Math.min(1.5, this.pitch + dPitch));
      if (!this.pending) {
        this.pending = true;
        requestAnimationFrame(() => { this.pending = false; this.draw(); });
      }
    }

    draw() {
      const { canvas, ctx, src, rot, faces, depth, order } = this;
      const w = canvas.width, h = canvas.height;
      const cy = Math.cos(this.yaw), sy = Math.sin(this.yaw);
      const cp = Math.cos(this.pitch), sp = Math.sin(this.pitch);
      // Turn about the vertical (y) axis, then tilt about x.
      for (let i = 0; i < this.n; i++) {
        const x = src[3 * i], y = src[3 * i + 1], z = src[3 * i + 2];
        const x1 = cy * x + sy * z, z1 = -sy * x + cy * z;
        rot[3 * i] = x1;
        rot[3 * i + 1] = cp * y - sp * z1;
        rot[3 * i + 2] = sp * y + cp * z1;
      }
      for (let f = 0; f < this.nFaces; f++) {
        depth[f] = rot[3 * faces[3 * f] + 2] + rot[3 * faces[3 * f + 1] + 2] + rot[3 * faces[3 * f + 2] + 2];
        order[f] = f;
      }
      // Far faces first (z grows away from the viewer).
      order.sort((a, b) => depth[b] - depth[a]);
      const scale = (0.45 * Math.min(w, h)) / this.radius;
      ctx.fillStyle = BACKGROUND;
      ctx.fillRect(0, 0, w, h);
      ctx.lineWidth = 0.6;
      ctx.lineJoin = "round";
      for (let k = 0; k < this.nFaces; k++) {
        const f = order[k];
        const a = 3 * faces[3 * f], b = 3 * faces[3 * f + 1], c = 3 * faces[3 * f + 2];
        const ux = rot[b] - rot[a], uy = rot[b + 1] - rot[a + 1], uz = rot[b + 2] - rot[a + 2];
        const vx = rot[c] - rot[a], vy = rot[c + 1] - rot[a + 1], vz = rot[c + 2] - rot[a + 2];
        const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
        const nn = Math.hypot(nx, ny, nz) || 1;
        // Two-sided Lambert, as the server's renderer.
        const lambert = Math.abs(nx * LIGHT[0] + ny * LIGHT[1] + nz * LIGHT[2]) / nn;
        const shade = 0.38 + 0.62 * lambert;
        const col = this.colors[this.faceParts[f]];
        const rgb = `rgb(${Math.round(255 * col[0] * shade)},${Math.round(255 * col[1] * shade)},${Math.round(255 * col[2] * shade)})`;
        ctx.fillStyle = rgb;
        ctx.strokeStyle = rgb; // a thin outline in the same colour hides the seams between triangles
        ctx.beginPath();
        ctx.moveTo(w / 2 + scale * rot[a], h / 2 + scale * rot[a + 1]);
        ctx.lineTo(w / 2 + scale * rot[b], h / 2 + scale * rot[b + 1]);
        ctx.lineTo(w / 2 + scale * rot[c], h / 2 + scale * rot[c + 1]);
        ctx.closePath();
        ctx.fill();
        ctx.stroke();
      }
      canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
    }
  }

  window.BodyViewer = BodyViewer;
  window.BodyViewer.BACKGROUND = BACKGROUND;
})();
