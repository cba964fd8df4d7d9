// What every part of the page builds its elements with: text always as textContent, never as markup.

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function money(usd) {
  return "$" + Number(usd || 0).toFixed(4);
}
