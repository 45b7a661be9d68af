// Copy buttons: the page works without this script (the snippets are selectable and downloadable).
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) { return; }
  var source = document.getElementById(button.dataset.target);
  if (!source || !navigator.clipboard) { return; }
  navigator.clipboard.writeText(source.textContent).then(function () {
    button.textContent = "copied";
  }, function () {
    button.textContent = "select and copy";
  });
});
