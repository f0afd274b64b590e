import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // DOM-free tests opt out with `// @vitest-environment node`; the rest get happy-dom.
    environment: "happy-dom",
  },
});
