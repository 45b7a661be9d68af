// Copy buttons: the page works without this script (the snippets are selectable and downloadable).
// A long snippet shows its first lines only (data-whole names the whole text): copy fetches it first,
// handing the clipboard a promise so the click still counts as the user's gesture.
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) { return; }
  var source = document.getElementById(button.dataset.target);
  if (!source || !navigator.clipboard) { return; }
  var done = function () { button.textContent = "copied"; };
  var failed = function () { button.textContent = "select and copy"; };
  var whole = source.dataset.whole;
  if (!whole) {
    navigator.clipboard.writeText(source.textContent).then(done, failed);
    return;
  }
  var text = fetch(whole, {credentials: "same-origin"}).then(function (answer) {
    if (!answer.ok) { throw new Error("HTTP " + answer.status); }
    return answer.text();
  });
  if (window.ClipboardItem) {
    var item = new ClipboardItem({"text/plain": text.then(function (t) { return new Blob([t], {type: "text/plain"}); })});
    navigator.clipboard.write([item]).then(done, failed);
  } else {
    text.then(function (t) { return navigator.clipboard.writeText(t); }).then(done, failed);
  }
});
