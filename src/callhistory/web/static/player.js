// The recording player's keys and speed: space plays/pauses, arrows seek 5 s.
(function () {
  var audio = document.getElementById("recording");
  var speed = document.getElementById("speed");
  if (!audio) return;
  speed.addEventListener("change", function () { audio.playbackRate = Number(speed.value); });
  document.addEventListener("keydown", function (event) {
    var tag = (event.target && event.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || tag === "AUDIO") return;
    if (event.key === " ") { event.preventDefault(); audio.paused ? audio.play() : audio.pause(); }
    if (event.key === "ArrowRight") audio.currentTime = Math.min(audio.duration || 0, audio.currentTime + 5);
    if (event.key === "ArrowLeft") audio.currentTime = Math.max(0, audio.currentTime - 5);
  });
})();
