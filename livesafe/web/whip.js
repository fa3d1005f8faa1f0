"use strict";
// Signalling shared by the relay's pages (WHIP and WHEP have one shape): a single offer
// holding every ICE candidate -- the relay takes no trickled candidates -- POSTed with an
// optional bearer token.  Returns the fetch Response.
async function postOffer(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
      setTimeout(resolve, 3000);  // use what we have: host candidates come first
    });
  }
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(url, { method: "POST", headers, body: pc.localDescription.sdp });
}
