// /docs: Swagger UI over the gateway's own OpenAPI document. Loaded from the gateway (the page's
// Content-Security-Policy allows scripts from it alone); nothing is fetched from anywhere else.
// The key entered in "Authorize" is kept in sessionStorage['perseus.apiKey'] (as /console keeps it),
// so it survives a reload of the tab and nothing longer.
(function () {
  "use strict";
  var STORAGE = "perseus.apiKey";
  var SCHEME = "ApiKey"; // components.securitySchemes.ApiKey: X-API-Key
  var root = document.getElementById("swagger-ui");

  function storedKey() {
    try {
      return window.sessionStorage.getItem(STORAGE);
    } catch (e) {
      return null;
    }
  }

  function keep(key) {
    try {
      if (key) {
        window.sessionStorage.setItem(STORAGE, key);
      } else {
        window.sessionStorage.removeItem(STORAGE);
      }
    } catch (e) {
      // storage refused (private mode): the key lives in the page only
    }
  }

  var ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-spec"),
    domNode: root,
    deepLinking: true,
    tryItOutEnabled: true,
    persistAuthorization: false, // localStorage would outlive the tab; sessionStorage is used instead
    validatorUrl: null, // the public validator is a third-party call
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    requestInterceptor: function (request) {
      if (!ui) {
        return request; // the document's own download can start before SwaggerUIBundle returns
      }
      var authorized = ui.authSelectors.authorized();
      var value = authorized && authorized.getIn([SCHEME, "value"]);
      keep(value || null);
      return request;
    },
    onComplete: function () {
      var key = storedKey();
      if (key) {
        ui.preauthorizeApiKey(SCHEME, key);
      }
      document.body.setAttribute("data-state", "ready");
    },
  });
})();
