// archtrace viewer: pan and zoom the graph, highlight a node's neighbours, search nodes.
// Plain JavaScript served as a file (the Content-Security-Policy allows no inline script).
"use strict";

function initGraph(svg) {
  const box = svg.viewBox.baseVal;
  const full = { x: box.x, y: box.y, width: box.width, height: box.height };
  let view = { x: full.x, y: full.y, w: full.width, h: full.height };
  const apply = () => svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  // Large graphs open fitted to the frame's width rather than at full size.
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.classList.add("interactive");
  // The frame is as tall as the drawing at the frame's width (small drawings are enlarged at
  // most 1.5 times), between a readable minimum and three quarters of the window: no empty
  // bands above and below the drawing.
  const fit = () => {
    const width = svg.getBoundingClientRect().width;
    if (width <= 0) return;
    const scale = Math.min(width / full.width, 1.5);
    const height = Math.max(160, Math.min(full.height * scale, window.innerHeight * 0.75));
    svg.style.height = `${Math.round(height)}px`;
  };
  fit();
  // A drawing taller than the frame opens at full width, showing its top (the entry points).
  const frame = svg.getBoundingClientRect();
  if (frame.width > 0 && view.h / view.w > frame.height / frame.width) {
    view.h = view.w * (frame.height / frame.width);
    apply();
  }

  const toGraph = (event) => {
    const box = svg.getBoundingClientRect();
    return {
      x: view.x + ((event.clientX - box.left) / box.width) * view.w,
      y: view.y + ((event.clientY - box.top) / box.height) * view.h,
    };
  };
  svg.addEventListener("wheel", (event) => {
    event.preventDefault();
    const at = toGraph(event);
    const factor = event.deltaY > 0 ? 1.15 : 1 / 1.15;
    view = {
      x: at.x - (at.x - view.x) * factor,
      y: at.y - (at.y - view.y) * factor,
      w: view.w * factor,
      h: view.h * factor,
    };
    apply();
  }, { passive: false });

  let drag = null;
  svg.addEventListener("mousedown", (event) => {
    drag = { x: event.clientX, y: event.clientY, view: { ...view }, moved: false };
  });
  window.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const box = svg.getBoundingClientRect();
    const dx = ((event.clientX - drag.x) / box.width) * view.w;
    const dy = ((event.clientY - drag.y) / box.height) * view.h;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    view = { ...view, x: drag.view.x - dx, y: drag.view.y - dy };
    apply();
  });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  // A drag that ends on a node is not a click on it.
  svg.addEventListener("click", (event) => { if (drag && drag.moved) event.preventDefault(); }, true);

  const edges = Array.from(svg.querySelectorAll("path.edge"));
  const nodes = Array.from(svg.querySelectorAll("g.node"));
  for (const node of nodes) {
    const id = node.dataset.id;
    node.addEventListener("mouseenter", () => {
      const near = new Set([id]);
      for (const edge of edges) {
        if (edge.dataset.from === id || edge.dataset.to === id) {
          near.add(edge.dataset.from);
          near.add(edge.dataset.to);
          edge.classList.add("lit");
        }
      }
      for (const other of nodes) other.classList.toggle("lit", near.has(other.dataset.id));
      svg.classList.add("highlighting");
    });
    node.addEventListener("mouseleave", () => {
      svg.classList.remove("highlighting");
      for (const el of svg.querySelectorAll(".lit")) el.classList.remove("lit");
    });
  }

  return {
    nodes,
    // Centres a node, zoomed in enough to read it and its neighbours.
    centre(node) {
      const box = node.getBBox();
      const frame = svg.getBoundingClientRect();
      const w = Math.min(view.w, 1600);
      const h = frame.width > 0 ? w * (frame.height / frame.width) : view.h;
      view = { x: box.x + box.width / 2 - w / 2, y: box.y + box.height / 2 - h / 2, w, h };
      apply();
    },
  };
}

function initSearch(graph) {
  const input = document.getElementById("search");
  const count = document.getElementById("search-count");
  if (!input || !graph) return;
  input.addEventListener("input", () => {
    const query = input.value.trim().toLowerCase();
    let first = null;
    let matches = 0;
    for (const node of graph.nodes) {
      const hit = query !== "" && node.dataset.id.toLowerCase().includes(query);
      node.classList.toggle("match", hit);
      if (hit) {
        matches += 1;
        first = first || node;
      }
    }
    document.getElementById("graph").classList.toggle("searching", query !== "");
    count.textContent = query === "" ? "" : `${matches} match${matches === 1 ? "" : "es"}`;
    if (first) graph.centre(first);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const svg = document.getElementById("graph");
  const graph = svg ? initGraph(svg) : null;
  initSearch(graph);
  document.body.dataset.ready = "true";
});
