// Rebuilds jssip.min.js from the npm package, as JsSIP's own
// `npm-scripts.mjs build` does (the package ships lib/ only). Run it in a
// directory holding `npm install jssip@3.13.8 esbuild@0.27.7`:
//   node /path/to/web/phone/build-jssip.mjs /path/to/web/phone/jssip.min.js
import fs from 'fs';
import { createRequire } from 'module';

// esbuild from the current directory's node_modules, not this file's.
const esbuild = createRequire(`${process.cwd()}/`)('esbuild');

const pkg = JSON.parse(fs.readFileSync('node_modules/jssip/package.json'));
const banner = `
 /*
  * JsSIP ${pkg.version}
  * ${pkg.description}
  * Copyright: 2012-2026 ${pkg.contributors.join(' ')}
  * Homepage: ${pkg.homepage}
  * License: ${pkg.license}
  */`;
await esbuild.build({
  entryPoints: ['node_modules/jssip/lib/JsSIP.js'],
  outfile: process.argv[2] || 'jssip.min.js',
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'iife',
  globalName: 'JsSIP',
  platform: 'browser',
  target: ['es2015'],
  supported: { 'template-literal': false },
  banner: { js: banner },
});
