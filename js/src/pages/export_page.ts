/**
 * The script of an exported HTML page (`mi_widgets/transport/export.py`): reads the payload the page
 * carries, loads the view's own bundle from it and renders the view on an `OfflineModel`.
 */

import { base64Bytes, OfflineModel, type RecordedReply } from "../lib/offline";

interface Payload {
  title: string;
  note: string;
  state: Record<string, unknown>;
  replies: Record<string, RecordedReply>;
  esm: string;
  css: string;
}

function text(b64: string): string {
  return new TextDecoder().decode(base64Bytes(b64));
}

async function main(): Promise<void> {
  const host = document.getElementById("miw-view") as HTMLElement;
  try {
    const payload = JSON.parse(document.getElementById("miw-payload")?.textContent ?? "") as Payload;
    (document.getElementById("miw-note") as HTMLElement).textContent = payload.note;
    const style = document.createElement("style");
    style.textContent = text(payload.css);
    document.head.append(style);
    const model = new OfflineModel(payload.state, payload.replies, () => "left out of this file, or needs a kernel");
    const url = URL.createObjectURL(new Blob([text(payload.esm)], { type: "text/javascript" }));
    const widget = (await import(/* @vite-ignore */ url)).default;
    URL.revokeObjectURL(url);
    widget.render({ model, el: host });
  } catch (e) {
    const box = document.createElement("pre");
    box.textContent = `This export could not start: ${e instanceof Error ? e.message : String(e)}`;
    host.replaceChildren(box);
  }
}

void main();
