"use strict";
// The chat page: one WebSocket per room; messages and presence arrive on it, and what the user
// says leaves on it (the server publishes it on the bus).
let socket = null;

function addMessage(user, text) {
  const list = document.getElementById("messages");
  const li = document.createElement("li");
  const who = document.createElement("b");
  who.textContent = user;
  li.append(who, `: ${text}`);
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}

function showMembers(users) {
  const list = document.getElementById("members");
  list.replaceChildren(...users.map((user) => {
    const li = document.createElement("li");
    li.textContent = user;
    return li;
  }));
}

function join(name, room) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams({ user: name });
  const state = document.getElementById("socket-state");
  socket = new WebSocket(
    `${scheme}://${location.host}/rooms/${encodeURIComponent(room)}/ws?${query}`);
  socket.onopen = () => {
    state.textContent = "(connected)";
    document.body.dataset.connected = "yes";
  };
  socket.onclose = () => {
    state.textContent = "(disconnected: reload to join again)";
    document.body.dataset.connected = "no";
  };
  socket.onmessage = (event) => {
    const item = JSON.parse(event.data);
    if (item.type === "message") addMessage(item.user, item.text);
    if (item.type === "presence") showMembers(item.users);
  };
  document.getElementById("room-name").textContent = room;
  document.getElementById("join-section").hidden = true;
  document.getElementById("chat-section").hidden = false;
  document.getElementById("text").focus();
}

document.getElementById("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = document.getElementById("name").value.trim();
  const room = document.getElementById("room").value.trim();
  if (name && room) join(name, room);
});

document.getElementById("say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (socket && socket.readyState === WebSocket.OPEN && input.value.trim()) {
    socket.send(JSON.stringify({ text: input.value }));
    input.value = "";
  }
});

const params = new URLSearchParams(location.search);
if (params.get("name") && params.get("room")) join(params.get("name"), params.get("room"));
