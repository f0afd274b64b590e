/** Views import their CSS for esbuild to bundle into `<view>.css`. */
declare module "*.css";
