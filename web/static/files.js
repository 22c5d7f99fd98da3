/* Files page: browse the workspace in place, upload (chunked, resumable), preview, rename/move, delete.
 *
 * The server renders the page (browsing and downloading work without JavaScript); htmx opens folders and orders
 * without a page load (the address and the back button follow), and these modules add the rest:
 *   files/here.js      the folder shown, the API's addresses, shared helpers
 *   files/listing.js   the listing kept current (polled, refreshed after changes, back/forward), folder sizes
 *   files/dialogs.js   the in-page dialog; rename/move, delete, new folder
 *   files/previews.js  image, video, audio and text previews
 *   files/uploads.js   chunked uploads from the picker or dropped on the page
 * Every change goes through the JSON API with the X-CSRFToken header; server strings only ever go through
 * textContent. Shared helpers: UI (common.js), Live (live.js). */
import "./files/listing.js";
import "./files/dialogs.js";
import "./files/uploads.js";

document.documentElement.classList.add("fm-js"); // shows the buttons that need this script
