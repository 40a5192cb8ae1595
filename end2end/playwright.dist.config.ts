import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The release tarball's test (packaging/test-dist.sh, `make dist-test`):
// the same browser and fixtures as the e2e suite, against the unpacked
// binary the script started at OPSDECK_BASE_URL.
export default defineConfig({
  ...base,
  testDir: './dist',
  outputDir: './test-results/dist',
});
