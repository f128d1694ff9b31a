// The flag list filters as one types; without this script the filter form
// still works, by reloading the page.
"use strict";
(function () {
	var form = document.getElementById("filters");
	var table = document.getElementById("flags");
	if (!form || !table) return;
	var rows = Array.prototype.slice.call(table.tBodies[0].rows);
	var count = document.getElementById("shown");
	function apply() {
		var q = form.q.value.trim().toLowerCase();
		var tag = form.tag.value, owner = form.owner.value, state = form.state.value;
		var shown = 0;
		for (var i = 0; i < rows.length; i++) {
			var d = rows[i].dataset;
			var ok = d.search.indexOf(q) >= 0 &&
				(!tag || (" " + d.tags + " ").indexOf(" " + tag + " ") >= 0) &&
				(!owner || d.owner === owner) &&
				(!state || d.state === state || (state === "stale" && d.stale === "1"));
			rows[i].hidden = !ok;
			if (ok) shown++;
		}
		count.textContent = shown;
	}
	form.addEventListener("input", apply);
	form.addEventListener("change", apply);
	form.addEventListener("submit", function (e) {
		e.preventDefault();
		apply();
		var params = new URLSearchParams(new FormData(form));
		history.replaceState(null, "", "?" + params.toString());
	});
})();
